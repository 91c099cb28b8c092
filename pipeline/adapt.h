/*
 * adapt.h — the adaptive operating mode: a pure, deterministic decision engine that picks, from a
 * table of operating modes (delta/codec/level/dedup/threads, each trading CPU for bytes), the one
 * that consumes dirty input fastest given what the running export measures now: each mode's
 * processing rate on the cores actually available, its output/input ratio on the data being sent,
 * and the network throughput seen in receiver acknowledgements.
 *
 * Why: the bottleneck of a handoff moves between the cloudlet's CPU and the WAN. A fixed setting
 * is wrong most of the time; the original (Ha et al., SEC'17) decided from offline profiles of one
 * workload. We start from a built-in profile and refine it from live observations.
 *
 * The model. For mode m with per-core speed S(m) (input bytes per CPU-second), ratio r(m)
 * (output/input), threads T(m), network throughput B (bytes/s) and the fraction A of the machine's
 * N cores not taken by competing load:
 *
 *     P(m) = S(m) * min(T(m), N * A)           processing rate (input bytes/s)
 *     C(m) = min(P(m), B / r(m))               rate at which dirty input is consumed
 *
 * "Input" above is data the modes encode: the chunks dedup left (RAW, XOR, DELTA), not zero chunks
 * and references, which every mode of a set finds alike and which cost next to nothing. A region
 * of duplicates otherwise made every mode look network-bound (one run at 100 Mbit/s predicted
 * xor-lz4 at 2.8e10 B/s and delta-zstd3 at 3.6e9 from such frames, and switched four times in its
 * first 2 s). adapt_observe_input() tells what share of the input that is, so
 * adapt_status() reports rates, ratios and the ETA per byte of input.
 *
 * adapt_decide() picks argmax C with hysteresis: it re-evaluates at least every decide_interval,
 * switches only when the best mode beats the current one by more than `hysteresis` and the current
 * one has been in place for `min_dwell`, except after a big change in B or A, which re-evaluates at
 * once and skips the dwell. A switch straight back to the mode the previous switch left (one of
 * the two predictions was wrong) doubles the dwell before the next such switch, up to 8 times,
 * and a predicted big gain no longer skips it; eight dwells in one mode beyond the stretched one
 * forget this.
 *
 * Estimates are exponential moving averages over irregular samples: a new sample gets weight
 * 1 - exp(-dt / tau), dt being the time since that estimate was last updated, so a mode probed
 * once every few seconds follows its samples while the active mode, observed every frame, is
 * smoothed over ~tau. B and A also keep a fast average (tau / 5); when the two part by more than
 * the big-change factor, in the same direction, on two samples at least 2 x tau / 5 apart, the
 * estimate jumps to the fast one (a step in the link's rate shows within a few hundred ms, not
 * after several tau; one wild sample, common when the exporter itself is starved of CPU, does not). Every function takes the time (now_ns, any monotonic
 * clock) from the caller, so the engine has no clock of its own and unit tests are exact.
 *
 * Ratios and speeds of modes other than the current one are predicted from the current mode's
 * frames and how the two compared on the same samples (adapt_observe_probe_ref): a ratio scaled
 * by theirs; a speed from costs per byte, the pipeline's around the mode (the current mode's
 * frames' less its probes') plus the other mode's probes'. The data moves every mode's ratio at
 * once between regions of the images, the comparison does not. A
 * frame/probe correction (frames compress better than samples, more so for zstd and lzma with
 * large frames) is learnt per mode while it is current, shared within a group of modes whose
 * frames gain alike, and fades when old.
 *
 * Until the link was measured (a saturated sample: it is as thin as it carried; or one above the
 * guess, or the socket drained at FAT_IDLE_RUN acks in a row: it is fat) the bandwidth is the
 * initial guess, and adapt_decide() keeps the initial mode, for at most a second; adapt_status()
 * then reports what the link carried, not the guess. A link seen draining (the socket empty, at
 * FAT_IDLE_RUN acks or FAT_SEND_RUN frames in a row) and never saturated gets the set's first,
 * cheapest mode whatever the predictions: B is unknown above what the link carried, and a mode
 * that fills it shows a saturated sample, which re-decides at once (that first one sets B no lower
 * than the most the link carried; the ones after it measure the link).
 *
 * What the link can carry is only seen while it is the bottleneck: a network sample taken while
 * the sender ran dry is a lower bound that can raise B but not lower it. A heavy mode on a link
 * measured once that then turned fat would so never learn that a lighter one pays; after
 * net_grow_after of such samples B is grown (only a measured one: a link never seen saturated has
 * no B to grow, only the guess and what it carried)
 * until a lighter mode wins, which then either fills the link (and B is measured again, the engine
 * goes back, and the next try waits twice as long) or proves the link fat.
 *
 * Every call holds the handle's lock: the exporter's walk and its sender thread (the link's
 * observations) share it. Nothing here allocates after adapt_new() or does I/O (switches are
 * logged with ho_debug), except the CPU meter at the end, which reads /proc and getrusage() and
 * is kept apart.
 */
#ifndef HANDOFF_ADAPT_H
#define HANDOFF_ADAPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One operating mode as the engine sees it. The table handed to adapt_new() is ordered from the
 * cheapest (fastest, weakest) to the strongest (slowest, smallest output); "neighbours" for
 * probing are the modes next to the current one in that order. */
struct adapt_mode_profile {
	const char *name;       /* e.g. "zstd-19"; copied by adapt_new(), at most 31 bytes kept */
	double rate;            /* initial processing speed: input bytes per CPU-second on one core (> 0) */
	double ratio;           /* initial output/input ratio, wire bytes per input byte (> 0) */
	unsigned threads;       /* worker threads the mode runs; 0 = as many as there are cores */
	unsigned group;         /* modes whose frames gain alike over a probe's sample (the same
	                           frame codec family and frame size) share a group > 0: until a
	                           mode learnt its own frame/probe ratio correction, it borrows the
	                           group's latest one (0: no group) */
};

/* Tuning. Call adapt_params_init() first, then change what you need. A zero field takes its
 * default (so `{ .ncores = 2 }` works too); for "none", use a tiny value. */
struct adapt_params {
	double ncores;               /* cores the pipeline may use (default: the CPUs of this
	                                process's affinity mask, e.g. 1 under `taskset -c 0`) */
	double initial_bw;           /* network bytes/s assumed before the first ack (default
	                                12.5e6, i.e. 100 Mbit/s) */
	uint64_t tau_rate_ns;        /* EMA time constant for processing speed (default 2 s) */
	uint64_t tau_ratio_ns;       /* ... for output/input ratios (default 2 s; a frame's ratio
	                                decays over this or over 64 MiB of data chunks, whichever
	                                is slower) */
	uint64_t tau_net_ns;         /* ... for network throughput (default 0.5 s) */
	uint64_t tau_cpu_ns;         /* ... for available CPU (default 0.5 s) */
	double first_weight;         /* weight of a mode's first observation against its profile
	                                (default 1: the profile is another machine's and another
	                                data set's, the first probe measured this one) */
	double hysteresis;           /* required relative improvement to switch (default 0.10) */
	uint64_t min_dwell_ns;       /* minimum time between switches (default 2 s) */
	uint64_t decide_interval_ns; /* re-evaluate at least this often (default 1 s) */
	double big_change;           /* B or A moving by more than this factor since the last
	                                evaluation (up: x(1+big), down: /(1+big)) re-evaluates at once
	                                and skips the dwell (default 0.5) */
	uint64_t probe_interval_ns;  /* at most one probe per interval (default 0.5 s) */
	unsigned probe_span;         /* probe modes up to this many places away (default 2) */
	double probe_budget;         /* probes may use at most this fraction of one core's time
	                                (default 0.05); on a link measured as the bottleneck, also up
	                                to a quarter of the time the current mode leaves the CPU idle
	                                (adapt_probe_peers) */
	uint64_t probe_bytes;        /* sample size a probe should compress (default 1 MiB; smaller
	                                samples compress worse) */
	uint64_t probe_time_ns;      /* ...but smaller (down to 64 KiB) when the probe, with the
	                                current mode's beside it, would take more CPU than this at
	                                the modes' speeds (default 20 ms): probes run in the
	                                pipeline's thread and hold it up (adapt_probe_bytes) */
	uint64_t net_grow_after_ns;  /* when the link has not been saturated for this long, let the
	                                bandwidth estimate grow so a lighter mode gets tried: a heavy
	                                mode on a fat link is CPU-bound and never sees the link's
	                                capacity (default 0.25 s; doubles after each try that had to be
	                                undone, up to 64 times; UINT64_MAX disables) */
	double net_grow_rate;        /* growth per second while doing so (default 3.0: x4 a second);
	                                while growing, adapt_decide() evaluates at every call */
};

/* Fill p with the defaults above. */
void adapt_params_init(struct adapt_params *p);

struct adapt;

/* Create an engine over n (1..64) modes. The table is copied. The initial mode is the one whose
 * worst loss by the profile at full CPU, against the best mode at each link rate from 5 Mbit/s to
 * 1 Gbit/s, is smallest (the link is unknown until measured). Returns NULL on invalid input (n out
 * of range, a rate or ratio not > 0, a NULL name; logged) or out of memory. */
struct adapt *adapt_new(const struct adapt_mode_profile *modes, size_t n,
                        const struct adapt_params *params);
void adapt_free(struct adapt *a);

size_t adapt_mode_count(const struct adapt *a);
const char *adapt_mode_name(const struct adapt *a, size_t idx);   /* NULL when out of range */
/* Index of the mode called name, or HO_ENOENT. */
int adapt_mode_index(const struct adapt *a, const char *name);

/* Pin the engine to mode idx (--mode), or resume adapting with idx < 0 (--adaptive). Observations
 * keep refining the estimates either way. HO_EINVAL when idx >= the number of modes. */
int adapt_force(struct adapt *a, int idx);

/* Of input_bytes of dirty input the pipeline consumed, literal_bytes were chunks it encoded as
 * data (not zero chunks or references): the share adapt_status() converts rates and ratios with.
 * Decayed over the ratio time constant. */
void adapt_observe_input(struct adapt *a, uint64_t input_bytes, uint64_t literal_bytes, uint64_t now_ns);

/* The pipeline ran mode_idx over input_bytes of data chunks (the model's input: not zero chunks or
 * references) and produced output_bytes of wire bytes (framing included), using cpu_ns of CPU time
 * (CLOCK_THREAD_CPUTIME_ID around the work, all threads summed) during wall_ns of wall-clock time
 * around the same work, with `threads` threads busy throughout (1 for one worker's batch). Time
 * blocked on a queue or on I/O must not be in wall_ns: cpu_ns / (threads * wall_ns) is read as the
 * share of a core each thread got, and a share below 0.95 is taken as evidence of competing load;
 * a share above it, as a lower bound on what is free, but only over a window of at least 50 ms (a
 * thread that slept gets a few ms at once whatever the load). Samples with zero input or zero
 * cpu_ns are ignored. HO_EINVAL for a bad index. */
int adapt_observe_mode(struct adapt *a, size_t mode_idx, uint64_t input_bytes, uint64_t output_bytes,
                       uint64_t cpu_ns, uint64_t wall_ns, unsigned threads, uint64_t now_ns);

/* Same for a probe: the caller compressed a sample of the current input with mode_idx (as handed
 * out by adapt_probe_due()) and threw the output away (input_bytes: its data chunks, as above). Also charges cpu_ns to the probe budget. */
int adapt_observe_probe(struct adapt *a, size_t mode_idx, uint64_t input_bytes, uint64_t output_bytes,
                        uint64_t cpu_ns, uint64_t wall_ns, uint64_t now_ns);

/* Same, for a probe of mode_idx on a sample that the caller also compressed with ref_idx (the
 * current mode, typically, reported with adapt_observe_probe()), which gave ref_output bytes in
 * ref_cpu_ns. Besides what adapt_observe_probe() learns, the engine keeps how the two compare on
 * the same data, and predicts a mode's ratio and speed from the current mode's frames scaled by
 * that comparison: the data moves every mode's ratio and speed at once from one region of the
 * images to the next (zero pages, text, compressed files), and comparing a sample with frames of
 * other data would chase those moves; and frames pay for the whole pipeline (reading, hashing,
 * sending), samples only for the mode. HO_EINVAL for a bad index. Probes reported before the
 * first adapt_probe_due() (a calibration at the start) are not charged to the probe budget. */
int adapt_observe_probe_ref(struct adapt *a, size_t mode_idx, uint64_t input_bytes, uint64_t output_bytes,
                            uint64_t cpu_ns, uint64_t wall_ns, size_t ref_idx, uint64_t ref_output,
                            uint64_t ref_cpu_ns, uint64_t now_ns);

/* The receiver acknowledged acked_bytes of wire bytes over wall_ns. `saturated` says the sender
 * had bytes waiting to go out during the whole interval (the link was the bottleneck); when it did
 * not, the sample is only a lower bound on the link's capacity and can raise the estimate but not
 * lower it. Use acknowledgements, not write() returns: a socket buffer absorbs megabytes. */
void adapt_observe_net(struct adapt *a, uint64_t acked_bytes, uint64_t wall_ns, bool saturated,
                       uint64_t now_ns);

/* Acknowledgement bookkeeping for transports that number their frames and get cumulative acks
 * ("ack SEQ": every frame up to SEQ arrived): call adapt_frame_sent() once a frame's bytes went
 * into the socket and adapt_frame_acked() for each ack; they feed adapt_observe_net() with the
 * bytes acknowledged between two acks.
 *
 * Whether such a sample shows the link's capacity or only what we managed to produce is told by
 * queued_bytes: what the socket still held, unsent or unacknowledged by TCP, just before this
 * frame was written (ioctl SIOCOUTQ). More than 0 means the link had not drained the previous
 * frames when this one was ready: we were waiting on the network. 0 means the link sat idle
 * waiting for us. A sample is saturated when every frame it covers was written into a backlog;
 * frames written into an empty socket for 100 ms in a row (8 or more) tell the link is not the
 * bottleneck before any ack does. Pass the time an ack arrived (the kernel's receive timestamp,
 * SO_TIMESTAMPNS), not when it was read: an exporter busy compressing reads late.
 * Pass UINT64_MAX when the transport cannot tell; then a sample counts as saturated when the
 * newest frame it covers had been written before the previous ack came back (right for a
 * link-bound sender, but a slow receiver's acks can make a CPU-bound sender look saturated).
 * The first frame written into a backlog while the engine still holds its first mode (no
 * decision yet) bounds the link above by what went before it over the time since the first
 * frame: the engine then takes the mode that loses least, by the profile, on links up to that
 * bound (once; never a forced mode), so that the first full frames are not the first mode's.
 *
 * Frames must be sent with increasing seq; up to 4096 may be outstanding (older ones are
 * forgotten, and their acks give no sample). adapt_frame_sent() also adds to bytes_sent. HO_ESEQ
 * for a seq going backwards or an ack for a frame never sent. */
int adapt_frame_sent(struct adapt *a, uint64_t seq, uint64_t wire_bytes, uint64_t queued_bytes, uint64_t now_ns);
int adapt_frame_acked(struct adapt *a, uint64_t seq, uint64_t now_ns);

/* What the socket held (SIOCOUTQ) when the sender looked, e.g. just before handling a batch of
 * acks. Optional, but it makes the saturation test sharp: a sender starved of CPU writes its
 * frames in bursts, each into the backlog of the one before, then sleeps while the link drains
 * them and idles; only an empty socket seen between two acks tells that the link ran dry, and such
 * a sample then only raises the estimate. */
void adapt_observe_queue(struct adapt *a, uint64_t queued_bytes, uint64_t now_ns);

/* The transport measures the link itself and calls adapt_observe_net() (on: from now on), e.g.
 * from TCP's own acknowledgements: what left the socket (bytes written less SIOCOUTQ) every
 * tenth of a second or so, saturated while the socket never ran empty. Frame acks then keep only
 * the in-flight count and the drain tests above, and give no samples: one ack per frame is one
 * sample per frame, and a frame sized to seconds of a thin link (to compress well) gave the engine
 * one sample in 12 s at 5 Mbit/s, during which it took the silence for a fat link and grew its
 * estimate to 100 times the link's rate. */
void adapt_set_net_meter(struct adapt *a, bool on);

/* Fraction (0..1) of the machine's cores not used by other processes, e.g. from adapt_cpu_meter. */
void adapt_observe_cpu(struct adapt *a, double available_fraction, uint64_t now_ns);

/* What is left and what went out, for the ETA: input_remaining = dirty input bytes still to
 * process (UINT64_MAX when unknown), bytes_sent = wire bytes sent so far (overrides the count
 * adapt_frame_sent() keeps). */
void adapt_set_progress(struct adapt *a, uint64_t input_remaining, uint64_t bytes_sent);

/* The mode to use for the next frame. Cheap; call it once per frame. */
size_t adapt_decide(struct adapt *a, uint64_t now_ns);

/* True when a probe is due now; then *mode_idx is the mode to probe on a sample of
 * adapt_probe_bytes() of the current input. Probes are spaced by probe_interval, limited to
 * probe_budget of one core's time (of the share of the cores competing load leaves us), and go
 * to the mode within probe_span of the current one whose last probe is the most overdue (its age
 * over its distance from the current mode), the current mode included once its frames were
 * observed (as if two places away): a sample
 * compresses worse than a whole frame (much worse on RAM, and more so for zstd and lzma than for
 * lz4), so each mode's probe ratio is scaled by its own frame/probe ratio, learnt while it was
 * current, before it is compared with the current mode's frames. Always false when the engine
 * is forced. */
bool adapt_probe_due(struct adapt *a, uint64_t now_ns, size_t *mode_idx);

/* The modes a due probe of mode `due` (adapt_probe_due) should take on its one sample, `due`
 * first, into idx (room for max); returns how many. Just `due` unless the link was measured as
 * the bottleneck and the current mode has CPU to spare (predicted to process at least twice what
 * the link carries of it, by its prediction and by its own probes' speed alike): then also every
 * other mode within probe_span of the current one. Modes
 * compared on one sample compare alike; on a thin link, where a region of the images can favour
 * delta over xor by 3x and the next the reverse, one mode probed on the first and another on the
 * second made the engine pick delta-lz4, which alone took 40 s where delta-zstd3 took 23 (640 MiB of a
 * guest's changes at 25 Mbit/s).
 * The probes' CPU is charged as usual (adapt_observe_probe). */
size_t adapt_probe_peers(const struct adapt *a, size_t due, size_t *idx, size_t max);

/* The link was measured as the bottleneck and the current mode leaves the CPU idle most of the
 * time (as adapt_probe_peers tells): the walk's waits for its sender thread (whose queue the link
 * holds full) are long, and work done while it waits (a probe) costs the transfer nothing. */
bool adapt_cpu_idle(const struct adapt *a);

/* Mode idx's processing speed estimate: input bytes per CPU-second on one core (-1 when idx is
 * out of range); e.g. to size a probe's sample so it does not hold the pipeline up for long. */
double adapt_mode_speed(const struct adapt *a, size_t idx);

/* The sample size for a probe of mode idx now: probe_bytes, less when the probe (and the current
 * mode's beside it, for another mode) would take more than probe_time_ns of CPU. 0 for a bad
 * index. */
uint64_t adapt_probe_bytes(const struct adapt *a, size_t idx);

/* Predicted consumption rate C(m) of mode idx (bytes/s of data chunks, the model's input) under
 * the current estimates, and its two terms; for tests, benchmarks and -vv logs. Negative when idx
 * is out of range. */
double adapt_predict(const struct adapt *a, size_t idx, double *proc_rate, double *net_rate);

struct adapt_status {
	size_t mode;                /* current mode */
	const char *mode_name;      /* owned by the engine */
	double bandwidth_Bps;       /* network throughput measured, bytes/s, as progress shows it:
	                               until a sample showed the link saturated, only what it
	                               carried so far (0 before the first sample), and while the
	                               engine tries a grown estimate, the last measured one: the
	                               engine's own guesses are no measurements */
	double window_Bps;          /* what the sender's unacknowledged window is sized for: as
	                               bandwidth_Bps, but following a grown estimate (a lighter
	                               mode tried on it must be able to fill a fatter link) */
	double bw_model_Bps;        /* the estimate the decisions use (the guess, until measured) */
	double ratio;               /* current mode's output/input estimate */
	double proc_Bps;            /* current mode's processing rate on the available cores */
	double rate_Bps;            /* predicted dirty-input consumption rate, min(proc, bw/ratio) */
	double cpu_avail;           /* fraction of the cores free of competing load */
	uint64_t bytes_sent;        /* from adapt_set_progress() */
	uint64_t input_remaining;   /* from adapt_set_progress(); UINT64_MAX = unknown */
	uint64_t inflight;          /* wire bytes sent (adapt_frame_sent) and not acknowledged */
	double eta_s;               /* input_remaining / rate_Bps, or, when longer, the time the
	                               link needs for the rest of the input at the current ratio
	                               plus inflight; < 0 when unknown */
	bool net_bound;             /* the network is the bottleneck of the current mode */
	bool forced;                /* pinned by adapt_force() */
	unsigned decisions;         /* evaluations so far */
	unsigned switches;          /* mode changes so far */
	unsigned probes;            /* probes observed so far */
	double net_measured_s;      /* time covered by the network samples so far */
	bool learning;              /* the first mode holds: the link was neither seen saturated
	                               nor seen carrying all we gave it, for up to a second */
	bool backlog;               /* the last frame sent (adapt_frame_sent) went into a socket
	                               still holding bytes: the link had not drained the ones
	                               before it */
	double elapsed_s;           /* from the first decision or progress line to the latest
	                               progress line (adapt_progress_due) */
};

void adapt_status(const struct adapt *a, struct adapt_status *st);

/* Rate-limits progress lines: true (and records now) when the last true answer is at least
 * interval_ns old, or force; the exporter's frame loop and the sender's waits share it. */
bool adapt_progress_due(struct adapt *a, uint64_t now_ns, uint64_t interval_ns, bool force);

/* Format st as one progress line (no newline): json = 0 gives the human line for stderr,
 *   "mode zstd-3 | 4.8 Mbit/s | ratio 0.312 | sent 12.3 MiB | eta 0:42"
 * json != 0 one JSON object with the keys mode, bandwidth_bps (bits/s), ratio, bytes_sent,
 * bytes_unacked (inflight), eta_s (null when unknown), rate_Bps, cpu_avail, bottleneck ("net" or "cpu"), switches,
 * forced, elapsed_s.
 * Returns the length written, or HO_ELIMIT when buf is too small (then buf holds "" ). */
int adapt_progress_line(const struct adapt_status *st, int json, char *buf, size_t len);

/* ---- CPU meter (does I/O; not part of the pure engine) ------------------------------------- */

/* Measures the fraction of the machine's CPU this process can have, from /proc/stat (the CPUs of
 * the process's affinity mask: all of them, or only those taskset or a cpuset allows; and
 * procs_running, scaled to that share of the machine) and this process's own
 * getrusage(RUSAGE_SELF) time and running threads, so our own work never counts as contention: see adapt_cpu_fraction(). One busy neighbour on 2 cores
 * reads 2/3 (two threads of ours would share the machine three ways), seven read 2/9. The reading
 * assumes the pipeline runs as many threads as there are cores; the worker shares reported with
 * adapt_observe_mode() are exact for what actually runs, and both feed the same estimate. */
struct adapt_cpu_meter {
	uint64_t total_ticks, idle_ticks;   /* last /proc/stat sample, in USER_HZ ticks */
	uint64_t self_ns;                   /* last getrusage sample */
	unsigned ncpu;                      /* CPUs measured (a change of affinity re-primes) */
	bool primed;
};

/* The formula: over an interval of cpu_ns CPU-time across all ncpu CPUs, idle_ns of it idle and
 * self_ns used by us, the others used o = cpu_ns - idle_ns - self_ns, i.e. o / cpu_ns * ncpu cores.
 * With k = the larger of that and others_runnable (their runnable threads, from procs_running
 * minus ours; 0 if unknown), returns the larger of what they left, 1 - o / cpu_ns, and the fair
 * share ncpu / (ncpu + k) a scheduler gives ncpu threads of ours. Pure; 1.0 for an empty interval. */
double adapt_cpu_fraction(double cpu_ns, double idle_ns, double self_ns, double ncpu, double others_runnable);

/* Take a sample. The first call primes the meter and returns HO_ESTATE; later calls store the
 * fraction over the interval since the previous call in *available_fraction and return 0. HO_EIO
 * when /proc/stat cannot be read; HO_ETRUNC when too little time passed to measure (< 2 ticks). */
int adapt_cpu_meter_sample(struct adapt_cpu_meter *m, double *available_fraction);

/*
 * ---- Wiring into the exporter (notes from the engine's author for whoever integrates) ---------
 * 1. Options: export_opts gets `bool adaptive; int progress; (0 none, 1 human, 2 json)`.
 *    --mode NAME -> adapt_force(index); --adaptive is the default with --to.
 * 2. export_run: adapt_new over mode_get(0..mode_count()-1) with threads = o->threads (mode.c
 *    should carry an initial per-core rate and ratio per mode, from bench/pipeline.sh); one chunk
 *    encoder per mode and thread; open base indexes if any mode needs them; count the total dirty
 *    bytes first (for the ETA).
 * 3. Wrap emit: on STREAM_EMIT_FRAME, adapt_observe_mode(a, cur, d_input, frame_len, d_cpu
 *    (CLOCK_PROCESS_CPUTIME_ID), d_wall, nthreads, now), with wall excluding emit and overlay_read
 *    time (else disk or socket waits look like CPU contention). Every >= 250 ms
 *    adapt_cpu_meter_sample -> adapt_observe_cpu. Every 1 s adapt_set_progress, adapt_status,
 *    adapt_progress_line, written with fputs to stderr (ho_log's prefix breaks JSON lines).
 * 4. Start of flush_run: m = adapt_decide(a, now); on a change close the frame
 *    (stream_enc_flush_frame), swap the worker's mode and chunk encoder, stream_enc_set_codec(enc,
 *    frame_codec, frame_level) and the mode's frame size (stream_enc_set_frame_limit). Then if
 *    adapt_probe_due(a, now, &j): encode adapt_probe_bytes(a, j) of the newest input with a probe
 *    encoder of the current mode and one of mode j (no sent set), compress each with its frame
 *    codec, time on CLOCK_THREAD_CPUTIME_ID, adapt_observe_probe (current) and
 *    adapt_observe_probe_ref (j against it). (export.c does all this.)
 * 5. transport.c tx_emit: ioctl(fd, SIOCOUTQ, &q) before writing a frame, adapt_frame_sent(a,
 *    seq, len, q, ho_mono_ns()) after; on "ack N" SIOCOUTQ again -> adapt_observe_queue(), then
 *    adapt_frame_acked(a, N, ho_mono_ns()). Read acks promptly (a thread, or drain on every
 *    run), or a slow mode timestamps them late. The link samples come from tx_meter (TCP's own
 *    acknowledgements, adapt_set_net_meter), before every frame and every 100 ms of waiting.
 * 6. Threads: adapt_params_init() counts the CPUs of the affinity mask; the exporter's default
 *    thread count should be the same number (so `taskset -c 0 handoff-export --adaptive` runs one
 *    worker, not two sharing a core).
 *    export_to_tcp creates the engine and passes it to export_run.
 */

#endif
