/*
 * report.c — what a migrate reports: a line per round and a summary on standard error, and the
 * JSON document of --report (handoff-vm(1)) that the tests and benchmarks read. Kept apart from
 * migrate.c so the figures' layout is in one place.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include "handoff/handoff_int.h"

void handoff_report_print(const struct handoff_report *rep, FILE *f, bool json)
{
	uint64_t wire = 0;
	for (int i = 0; i < rep->n; i++)
		wire += rep->r[i].wire_bytes;
	double total = secs(rep->t_end - rep->t_start);
	double down = rep->handed_off ? (double)((int64_t)rep->t_dst_running - (int64_t)rep->t_pause) / 1e9 : -1;
	double downc = rep->handed_off ? secs(rep->t_confirm - rep->t_pause) : -1;
	if (!json) {
		char b1[32], b2[32];
		for (int i = 0; i < rep->n; i++) {
			const struct round *r = &rep->r[i];
			fprintf(f, "handoff-vm: round %d (%s): generations %u..%u, %" PRIu64 " disk + %" PRIu64
				" memory chunks, %s changed, %s sent in %.2f s\n", i + 1,
				r->live ? "live" : rep->postcopy ? "post-copy" : "paused",
				r->since + 1, r->until, r->chunks[0], r->chunks[1],
				ho_fmt_bytes(r->input_bytes, b1, sizeof(b1)), ho_fmt_bytes(r->wire_bytes, b2, sizeof(b2)),
				secs(r->ns));
		}
		if (rep->abandoned_ns)
			fprintf(f, "handoff-vm: a live round was abandoned after %.2f s: the guest had rewritten %" PRIu64
				" chunks while it sent %" PRIu64 " of %" PRIu64 "\n", secs(rep->abandoned_ns),
				rep->abandoned_rewritten, rep->abandoned_sent, rep->abandoned_chunks);
		/* post-copy: the chunk server's answers crossed the link too (their own line below) */
		char pcb[64] = "";
		if (rep->postcopy && rep->pc.bytes)
			snprintf(pcb, sizeof(pcb), " + %s of answers on demand", ho_fmt_bytes(rep->pc.bytes, b2, sizeof(b2)));
		if (rep->handed_off)
			fprintf(f, "handoff-vm: handed off in %.2f s: %d rounds, %s on the wire%s + %" PRIu64
				" bytes of device state; downtime %.3f s (pause on the source to running on the "
				"destination; %.3f s until %s; clock offset %.1f ms, rtt %.1f ms)\n",
				total, rep->n, ho_fmt_bytes(wire, b1, sizeof(b1)), pcb, rep->devstate_bytes, down, downc,
				rep->postcopy ? "the destination confirmed the last chunk" : "the source heard of it",
				(double)rep->clock_offset / 1e6, (double)rep->rtt_ns / 1e6);
		if (rep->handed_off && rep->postcopy)
			fprintf(f, "handoff-vm: post-copy: the destination ran %.2f s before the last of %" PRIu64
				" chunks arrived; %" PRIu64 " requests answered with %" PRIu64 " chunks (%s) ahead of the stream,"
				" which gave way to them for %.2f s\n",
				rep->t_pc_done > rep->t_dst_running ? secs(rep->t_pc_done - rep->t_dst_running) : 0.0,
				rep->pc_chunks, rep->pc.requests, rep->pc.chunks, ho_fmt_bytes(rep->pc.bytes, b1, sizeof(b1)),
				secs(rep->pc_held_ns));
		return;
	}
	fprintf(f, "{\n  \"postcopy\": %s,\n  \"postcopy_seconds\": %.3f,\n  \"postcopy_chunks\": %" PRIu64
		",\n  \"postcopy_demand_requests\": %" PRIu64 ",\n  \"postcopy_demand_chunks\": %" PRIu64
		",\n  \"postcopy_demand_bytes\": %" PRIu64 ",\n  \"postcopy_manifest_bytes\": %" PRIu64
		",\n  \"postcopy_stream_held_seconds\": %.3f,\n",
		rep->postcopy ? "true" : "false", rep->postcopy && rep->t_pc_done > rep->t_pause ? secs(rep->t_pc_done - rep->t_pause) : 0.0,
		rep->pc_chunks, rep->pc.requests, rep->pc.chunks, rep->pc.bytes, rep->pc_manifest_bytes,
		secs(rep->pc_held_ns));
	if (rep->abandoned_ns)
		fprintf(f, "  \"live_round_abandoned\": { \"after_seconds\": %.3f, \"round_chunks\": %" PRIu64
			", \"sent_chunks\": %" PRIu64 ", \"rewritten_chunks\": %" PRIu64 " },\n",
			secs(rep->abandoned_ns), rep->abandoned_chunks, rep->abandoned_sent, rep->abandoned_rewritten);
	else
		fprintf(f, "  \"live_round_abandoned\": null,\n");
	fprintf(f, "  \"handed_off\": %s,\n  \"total_seconds\": %.3f,\n  \"downtime_seconds\": %.3f,\n"
		"  \"downtime_confirmed_seconds\": %.3f,\n  \"rounds_total\": %d,\n  \"wire_bytes_total\": %" PRIu64
		",\n  \"devstate_bytes\": %" PRIu64 ",\n  \"clock_offset_ms\": %.3f,\n  \"rtt_ms\": %.3f,\n"
		"  \"paused_for_final_round_seconds\": %.3f,\n  \"downtime_parts\": { \"save_device_state\": %.3f, "
		"\"final_round\": %.3f, \"device_state_verify_resume\": %.3f },\n  \"rounds\": [\n",
		rep->handed_off ? "true" : "false", total, down, downc, rep->n, wire, rep->devstate_bytes,
		(double)rep->clock_offset / 1e6, (double)rep->rtt_ns / 1e6,
		rep->t_final_done > rep->t_pause ? secs(rep->t_final_done - rep->t_pause) : 0.0,
		rep->t_devstate > rep->t_pause ? secs(rep->t_devstate - rep->t_pause) : 0.0,
		rep->t_final_done > rep->t_devstate && rep->t_devstate ? secs(rep->t_final_done - rep->t_devstate) : 0.0,
		rep->handed_off && rep->t_dst_running > rep->t_final_done ? secs(rep->t_dst_running - rep->t_final_done) : 0.0);
	for (int i = 0; i < rep->n; i++) {
		const struct round *r = &rep->r[i];
		fprintf(f, "    { \"round\": %d, \"live\": %s, \"since\": %u, \"until\": %u, \"disk_chunks\": %" PRIu64
			", \"memory_chunks\": %" PRIu64 ", \"changed_bytes\": %" PRIu64 ", \"wire_bytes\": %" PRIu64
			", \"seconds\": %.3f }%s\n", i + 1, r->live ? "true" : "false", r->since, r->until,
			r->chunks[0], r->chunks[1], r->input_bytes, r->wire_bytes, secs(r->ns), i + 1 < rep->n ? "," : "");
	}
	fprintf(f, "  ]\n}\n");
}

void handoff_report_free(struct handoff_report *r)
{
	free(r);
}
