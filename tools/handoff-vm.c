/*
 * handoff-vm — a real VM handoff end to end: `base create`, `start`, `migrate` (source), `receive`
 * (destination), `stop` (handoff-vm(1)). This file is the thin main(): it parses each command's
 * options into the option struct of handoff/handoff.h, loads the --key file, calls the handoff
 * module (which holds the orchestration, the control protocol and the report) and maps its
 * outcome onto the exit statuses below; a migrate's report is printed here.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common/common.h"
#include "handoff/handoff.h"
#include "pipeline/pipeline.h"

/* exit statuses, see handoff-vm(1) */
enum {
	EX_OK = 0,
	EX_FAIL = 1,        /* any other failure (nothing was paused) */
	EX_USAGE = 2,
	EX_BASE = 3,        /* base identity mismatch: refused before anything was paused */
	EX_RESUMED = 4,     /* handoff failed; the source VM was resumed and runs */
	EX_LOST = 5,        /* handoff failed and the source VM could not be resumed */
	EX_VERIFY = 6,      /* receive: stream or device state failed verification */
};

static int exit_status(enum handoff_outcome o)
{
	switch (o) {
	case HANDOFF_OK: return EX_OK;
	case HANDOFF_BASE_MISMATCH: return EX_BASE;
	case HANDOFF_RESUMED: return EX_RESUMED;
	case HANDOFF_LOST: return EX_LOST;
	case HANDOFF_VERIFY_FAILED: return EX_VERIFY;
	case HANDOFF_FAILED: default: return EX_FAIL;
	}
}

/* the index of arg in names[n], or -1 */
static int name_index(const char *arg, const char *const *names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(arg, names[i]))
			return (int)i;
	return -1;
}

/* the --fault names a command accepts, between first and last */
static int parse_fault(const char *arg, enum handoff_fault first, enum handoff_fault last, enum handoff_fault *out)
{
	for (int f = first; f <= (int)last; f++) {
		if (!strcmp(arg, handoff_fault_name((enum handoff_fault)f))) {
			*out = (enum handoff_fault)f;
			return 0;
		}
	}
	return -1;
}

static int cmd_base_create(int argc, char **argv)
{
	enum { OPT_GUEST = 256, OPT_RAM, OPT_APPEND, OPT_ACCEL, OPT_SETTLE, OPT_TIMEOUT, OPT_FORCE };
	static const struct option opts[] = {
		{ "guest", required_argument, NULL, OPT_GUEST }, { "ram", required_argument, NULL, OPT_RAM },
		{ "append", required_argument, NULL, OPT_APPEND }, { "accel", required_argument, NULL, OPT_ACCEL },
		{ "settle", required_argument, NULL, OPT_SETTLE }, { "timeout", required_argument, NULL, OPT_TIMEOUT },
		{ "force", no_argument, NULL, OPT_FORCE }, { 0 } };
	struct handoff_base_opts o = { .settle = 3, .timeout_s = 600 };
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case OPT_GUEST: o.guest = optarg; break;
		case OPT_RAM:
			if (ho_parse_size(optarg, &o.ram) || o.ram < (16u << 20) || o.ram % (1u << 20)) {
				ho_err("invalid RAM size '%s' (at least 16M, whole MiB)", optarg);
				return EX_USAGE;
			}
			break;
		case OPT_APPEND: o.append = optarg; break;
		case OPT_ACCEL: o.accel = optarg; break;
		case OPT_SETTLE: o.settle = atof(optarg); break;
		case OPT_TIMEOUT: o.timeout_s = atoi(optarg); break;
		case OPT_FORCE: o.force = true; break;
		default: return EX_USAGE;
		}
	}
	if (!o.guest || argc - optind != 1) {
		ho_err("usage: handoff-vm base create --guest tiny|realistic|GUEST_ENV [--ram SIZE] OUT_DIR");
		return EX_USAGE;
	}
	o.out_dir = argv[optind];
	return exit_status(handoff_base_create(&o));
}

static int cmd_start(int argc, char **argv)
{
	enum { OPT_BASE = 256, OPT_OVL, OPT_MNT, OPT_ACCEL, OPT_RUN };
	static const struct option opts[] = {
		{ "base", required_argument, NULL, OPT_BASE }, { "overlay", required_argument, NULL, OPT_OVL },
		{ "mount", required_argument, NULL, OPT_MNT }, { "accel", required_argument, NULL, OPT_ACCEL },
		{ "run-dir", required_argument, NULL, OPT_RUN }, { 0 } };
	struct handoff_start_opts o = { 0 };
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case OPT_BASE: o.base_dir = optarg; break;
		case OPT_OVL: o.overlay = optarg; break;
		case OPT_MNT: o.mount = optarg; break;
		case OPT_ACCEL: o.accel = optarg; break;
		case OPT_RUN: o.run_dir = optarg; break;
		default: return EX_USAGE;
		}
	}
	if (!o.base_dir || !o.overlay || !o.mount || optind != argc) {
		ho_err("usage: handoff-vm start --base BASE_DIR --overlay OVL --mount MNT [--run-dir DIR]");
		return EX_USAGE;
	}
	return exit_status(handoff_start(&o));
}

static int cmd_stop(int argc, char **argv)
{
	static const struct option opts[] = { { "run-dir", required_argument, NULL, 'r' }, { 0 } };
	const char *run = NULL;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c != 'r')
			return EX_USAGE;
		run = optarg;
	}
	if (!run || optind != argc) {
		ho_err("usage: handoff-vm stop --run-dir DIR");
		return EX_USAGE;
	}
	return exit_status(handoff_stop(run));
}

static int cmd_migrate(int argc, char **argv)
{
	enum { OPT_RUN = 256, OPT_TO, OPT_KEY, OPT_MODE, OPT_MAXR, OPT_TARGET, OPT_REPORT, OPT_KEEP, OPT_FAULT, OPT_RATE, OPT_TIMEOUT,
	       OPT_VERIFY, OPT_POSTCOPY, OPT_ABANDON };
	static const struct option opts[] = {
		{ "run-dir", required_argument, NULL, OPT_RUN }, { "to", required_argument, NULL, OPT_TO },
		{ "key", required_argument, NULL, OPT_KEY }, { "mode", required_argument, NULL, OPT_MODE },
		{ "threads", required_argument, NULL, 'T' }, { "max-rounds", required_argument, NULL, OPT_MAXR },
		{ "downtime-target", required_argument, NULL, OPT_TARGET }, { "report", required_argument, NULL, OPT_REPORT },
		{ "keep-source", no_argument, NULL, OPT_KEEP }, { "fault", required_argument, NULL, OPT_FAULT },
		{ "rate-limit", required_argument, NULL, OPT_RATE }, { "timeout", required_argument, NULL, OPT_TIMEOUT },
		{ "verify", required_argument, NULL, OPT_VERIFY }, { "postcopy", required_argument, NULL, OPT_POSTCOPY },
		{ "abandon-live", required_argument, NULL, OPT_ABANDON },
		{ 0 } };
	const char *keyfile = NULL, *report_file = NULL, *fault = NULL, *verify = "memory", *postcopy = "auto";
	struct handoff_migrate_opts o = { .max_rounds = 8, .downtime_target_ms = 300, .timeout_s = 30, .abandon_live = 0.5 };
	char *end;
	int c;
	uint64_t v;
	optind = 1;
	while ((c = getopt_long(argc, argv, "T:", opts, NULL)) != -1) {
		switch (c) {
		case OPT_RUN: o.run_dir = optarg; break;
		case OPT_TO: o.to = optarg; break;
		case OPT_KEY: keyfile = optarg; break;
		case OPT_MODE: o.mode = optarg; break;
		case 'T': o.threads = (unsigned)atoi(optarg); break;
		case OPT_MAXR: o.max_rounds = atoi(optarg); break;
		case OPT_TARGET: o.downtime_target_ms = atoi(optarg); break;
		case OPT_REPORT: report_file = optarg; break;
		case OPT_KEEP: o.keep_source = true; break;
		case OPT_FAULT: fault = optarg; break;
		case OPT_RATE:
			if (ho_parse_size(optarg, &v) || !v) {
				ho_err("invalid rate '%s'", optarg);
				return EX_USAGE;
			}
			o.rate_limit = v;
			break;
		case OPT_TIMEOUT: o.timeout_s = atoi(optarg); break;
		case OPT_VERIFY: verify = optarg; break;
		case OPT_POSTCOPY: postcopy = optarg; break;
		case OPT_ABANDON:
			o.abandon_live = strtod(optarg, &end);
			if (end == optarg || *end || !(o.abandon_live >= 0 && o.abandon_live <= 1e6)) {
				ho_err("invalid --abandon-live '%s' (a fraction, 0 = never)", optarg);
				return EX_USAGE;
			}
			break;
		default: return EX_USAGE;
		}
	}
	/* in the order of enum handoff_postcopy and enum handoff_verify */
	static const char *const pc_names[] = { "auto", "never", "always" }, *const v_names[] = { "none", "memory", "all" };
	int pc = name_index(postcopy, pc_names, HO_ARRAY_SIZE(pc_names)), vf = name_index(verify, v_names, HO_ARRAY_SIZE(v_names));
	if (pc < 0) {
		ho_err("invalid --postcopy '%s' (never, always, auto)", postcopy);
		return EX_USAGE;
	}
	if (vf < 0) {
		ho_err("invalid --verify '%s' (none, memory, all)", verify);
		return EX_USAGE;
	}
	o.postcopy = (enum handoff_postcopy)pc;
	o.verify = (enum handoff_verify)vf;
	if (!o.run_dir || !o.to || optind != argc || o.max_rounds < 1 || o.max_rounds > HANDOFF_MAX_ROUNDS ||
	    o.timeout_s < 1) {
		ho_err("usage: handoff-vm migrate --run-dir DIR --to HOST:PORT [--key FILE] [--mode NAME] "
		       "[--max-rounds 1..%d] [--report FILE]", HANDOFF_MAX_ROUNDS);
		return EX_USAGE;
	}
	if (fault && parse_fault(fault, HANDOFF_FAULT_CORRUPT_FINAL, HANDOFF_FAULT_SLOW_POSTCOPY, &o.fault)) {
		ho_err("unknown fault '%s' (corrupt-final, wrong-digest, corrupt-postcopy, slow-postcopy)", fault);
		return EX_USAGE;
	}
	uint8_t *key = NULL;
	if (keyfile) {
		if (pipeline_load_key(keyfile, &key, &o.key_len))
			return EX_USAGE;
		o.key = key;
	}
	struct handoff_report *rep = NULL;
	enum handoff_outcome out = handoff_migrate(&o, &rep);
	if (rep) {
		handoff_report_print(rep, stderr, false);
		if (report_file) {
			FILE *f = fopen(report_file, "w");
			if (f) {
				handoff_report_print(rep, f, true);
				fclose(f);
			} else {
				ho_err("cannot write '%s': %s", report_file, strerror(errno));
			}
		}
	}
	handoff_report_free(rep);
	free(key);
	return exit_status(out);
}

static int cmd_receive(int argc, char **argv)
{
	enum { OPT_BASE = 256, OPT_OVL, OPT_MNT, OPT_LISTEN, OPT_KEY, OPT_RUN, OPT_ACCEL, OPT_PORTFILE, OPT_TIMEOUT, OPT_FAULT };
	static const struct option opts[] = {
		{ "base", required_argument, NULL, OPT_BASE }, { "overlay", required_argument, NULL, OPT_OVL },
		{ "mount", required_argument, NULL, OPT_MNT }, { "listen", required_argument, NULL, OPT_LISTEN },
		{ "key", required_argument, NULL, OPT_KEY }, { "run-dir", required_argument, NULL, OPT_RUN },
		{ "accel", required_argument, NULL, OPT_ACCEL }, { "port-file", required_argument, NULL, OPT_PORTFILE },
		{ "timeout", required_argument, NULL, OPT_TIMEOUT }, { "fault", required_argument, NULL, OPT_FAULT },
		{ 0 } };
	struct handoff_receive_opts o = { 0 };
	const char *fault = NULL;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case OPT_BASE: o.base_dir = optarg; break;
		case OPT_OVL: o.overlay = optarg; break;
		case OPT_MNT: o.mount = optarg; break;
		case OPT_LISTEN: o.listen = optarg; break;
		case OPT_KEY: o.key_file = optarg; break;
		case OPT_RUN: o.run_dir = optarg; break;
		case OPT_ACCEL: o.accel = optarg; break;
		case OPT_PORTFILE: o.port_file = optarg; break;
		case OPT_TIMEOUT: o.timeout_s = atoi(optarg); break;
		case OPT_FAULT: fault = optarg; break;
		default: return EX_USAGE;
		}
	}
	if (!o.base_dir || !o.overlay || !o.mount || !o.listen || optind != argc) {
		ho_err("usage: handoff-vm receive --base BASE_DIR --overlay OVL --mount MNT --listen ADDR:PORT [--key FILE]");
		return EX_USAGE;
	}
	if (fault && parse_fault(fault, HANDOFF_FAULT_DIE_AFTER_DEVSTATE, HANDOFF_FAULT_DIE_AFTER_DEVSTATE, &o.fault)) {
		ho_err("unknown fault '%s' (die-after-devstate)", fault);
		return EX_USAGE;
	}
	char host[256], port[16];
	if (transport_split_hostport(o.listen, host, sizeof(host), port, sizeof(port))) {
		ho_err("invalid listen address '%s' (ADDR:PORT)", o.listen);
		return EX_USAGE;
	}
	uint8_t *key = NULL;
	if (o.key_file) {
		if (pipeline_load_key(o.key_file, &key, &o.key_len))
			return EX_USAGE;
		o.key = key;
	}
	enum handoff_outcome out = handoff_receive(&o);
	free(key);
	return exit_status(out);
}

/* ---- main ---------------------------------------------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
"usage: handoff-vm base create --guest tiny|realistic|GUEST_ENV [--ram SIZE] [--append ARGS] OUT_DIR\n"
"       handoff-vm start --base BASE_DIR --overlay OVL --mount MNT [--run-dir DIR] [--accel kvm|tcg]\n"
"       handoff-vm migrate --run-dir DIR --to HOST:PORT [--key FILE] [--mode NAME] [-T N]\n"
"                          [--max-rounds N] [--downtime-target MS] [--report FILE] [--keep-source]\n"
"                          [--verify none|memory|all] [--postcopy never|always|auto]\n"
"                          [--abandon-live FRACTION]\n"
"       handoff-vm receive --base BASE_DIR --overlay OVL --mount MNT --listen ADDR:PORT [--key FILE]\n"
"                          [--run-dir DIR] [--port-file FILE] [--timeout S]\n"
"       handoff-vm stop --run-dir DIR\n"
"\n"
"Hand a running VM over between two cloudlets that hold the same base: see handoff-vm(1).\n"
"Global options before the command: -q, -v, -h, --version.\n");
}

int main(int argc, char **argv)
{
	int level = LOG_NOTICE, i = 1;
	ho_log_init("handoff-vm");
	signal(SIGPIPE, SIG_IGN);
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "-q") || !strcmp(argv[i], "--quiet"))
			level = LOG_ERR;
		else if (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--verbose"))
			level = level >= LOG_INFO ? LOG_DEBUG : LOG_INFO;
		else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(stdout);
			return EX_OK;
		} else if (!strcmp(argv[i], "--version")) {
			printf("handoff-vm 0.1\n");
			return EX_OK;
		} else {
			ho_err("unknown option '%s'", argv[i]);
			usage(stderr);
			return EX_USAGE;
		}
	}
	ho_log_set_level(level);
	if (i >= argc) {
		usage(stderr);
		return EX_USAGE;
	}
	const char *cmd = argv[i];
	if (!strcmp(cmd, "base")) {
		if (i + 1 >= argc || strcmp(argv[i + 1], "create")) {
			ho_err("unknown base command (base create)");
			return EX_USAGE;
		}
		return cmd_base_create(argc - i - 1, argv + i + 1);
	}
	if (!strcmp(cmd, "start"))
		return cmd_start(argc - i, argv + i);
	if (!strcmp(cmd, "migrate"))
		return cmd_migrate(argc - i, argv + i);
	if (!strcmp(cmd, "receive"))
		return cmd_receive(argc - i, argv + i);
	if (!strcmp(cmd, "stop"))
		return cmd_stop(argc - i, argv + i);
	ho_err("unknown command '%s'", cmd);
	usage(stderr);
	return EX_USAGE;
}
