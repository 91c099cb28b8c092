/*
 * test_handoff.c — the handoff module's pure policies: when a live round is abandoned for
 * post-copy (handoff_live_abandon, --abandon-live of handoff-vm(1)). The mechanism around it
 * (the watch thread, the cancelled round, the post-copy after it) is t6040's.
 */
#include "handoff/handoff_int.h"
#include "tests/unit/tap.h"

int main(void)
{
	/* the guest outruns the link: more rewritten than sent so far (bench/vm.sh's heavy
	 * workload at 25 Mbit/s, 2 s into the round) */
	ok(handoff_live_abandon(72353, 72353, 10803, 304746, 0.5), "72,353 rewritten while 10,803 went: abandon");
	ok(!handoff_live_abandon(10803, 10803, 10803, 304746, 0.5), "  ... as many rewritten as sent: go on");
	/* writes while the exporter read its indexes and sent nothing do not count against the link */
	ok(!handoff_live_abandon(9000, 500, 800, 304746, 0.5), "rewritten before the first chunk went: not the link's");
	/* the round is mostly undone, though the guest dirties no faster than the link drains */
	ok(handoff_live_abandon(160000, 100000, 200000, 300000, 0.5), "more than half of the round rewritten: abandon");
	ok(!handoff_live_abandon(150000, 100000, 200000, 300000, 0.5), "  ... exactly half: go on");
	/* the light workload at 10 Mbit/s: 3,110 of 8,900 chunks rewritten by the end of the round
	 * (a working set, which the next rounds shrink to) */
	ok(!handoff_live_abandon(3110, 3110, 8900, 8900, 0.5), "light workload, end of round 1: go on");
	ok(handoff_live_abandon(3110, 3110, 8900, 8900, 0.3), "  ... abandoned with --abandon-live 0.3");
	/* 0 never abandons */
	ok(!handoff_live_abandon(1000000, 1000000, 0, 10, 0), "--abandon-live 0 never abandons");
	ok(!handoff_live_abandon(0, 0, 0, 10, 1e-9), "nothing rewritten: go on");
	return done_testing();
}
