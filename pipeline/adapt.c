/*
 * adapt.c — the adaptive operating-mode engine (see adapt.h for the model): estimates fed by the
 * running export, a hysteretic argmax over min(processing rate, network rate / ratio), a probe
 * scheduler with a CPU budget, a progress formatter, and a CPU meter that tells competing load from
 * our own. Everything above the meter is pure: no clock, no I/O, no allocation after adapt_new().
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common/common.h"
#include "pipeline/adapt.h"

#define ADAPT_MAX_MODES   64
#define ADAPT_NAME_MAX    32
#define NS_PER_S          1e9
/* A thread that got at least this share of a core while it wanted all of it saw no contention. */
#define FULL_SHARE        0.95
/* ...but only over a window this long, and a short window says nothing the other way either: a
 * scheduler lets a thread that slept run a few ms unpreempted however many others wait (a light
 * mode's frame fits in that), so a short window at full speed says nothing about the share a
 * heavier mode would get; and one competing thread's time slice (3-4 ms) in a frame of a few KiB
 * made a window of 8 ms read "3 % of the machine", where the meter read half. */
#define SHARE_MIN_WALL_NS 50000000ull
/* Probe tokens (CPU ns) saved up for at most this much wall time, so a long quiet spell does not
 * buy a burst of probes. */
#define PROBE_BANK_NS     10000000000ull
/* Network samples shorter than this are pooled first: single acks come in bursts, and a sender
 * starved of CPU reads them in bunches, after gaps of a scheduler period or more. */
#define NET_MIN_WINDOW_NS 150000000ull
#define NET_GROW_MAX      16.0
#define NET_LEARN_NS      1000000000ull
#define FAT_IDLE_RUN      4
/* ...or every frame of FAT_SEND_NS, and at least FAT_SEND_RUN of them, written into an empty
 * socket: the link drained each before the next was ready. Acks alone told that late where it
 * costs most: a strong mode that is CPU-bound on a fat link fills 16 MiB frames once the warm-up
 * is over, an ack every 150 ms, so the first mode held for the whole NET_LEARN_NS (1 Gbit/s: a
 * second of delta-zstd3 at half xor-lz4's speed). On a thin link the socket fills within a few
 * frames, and stays full. */
#define FAT_SEND_RUN      8
#define FAT_SEND_NS       100000000ull
/* A mode predicted to process this many times what the link takes of it leaves the CPU idle most
 * of the time (net_bound_idle). With the current mode so, a due probe takes every mode of the
 * probe span on its sample (adapt_probe_peers), the probes may spend up to PROBE_IDLE_SHARE of
 * the idle time, and a switch to a mode that idles too needs IDLE_HYST_MUL of the hysteresis. */
#define PEER_HEADROOM     2.0
#define PROBE_IDLE_SHARE  0.25
#define IDLE_HYST_MUL     0.3
#define FLAP_MAX          3          /* dwell doublings after back-and-forth switches */
#define FLAP_FORGET       8          /* dwells in one mode that forget them */
#define CORR_MIN          0.4
/* between modes of different groups, the corrections' ratio, kept within less than the
 * hysteresis: corrections are learnt from frames and samples of different data (and from the
 * warm-up's small frames), and on data where two modes' samples tie (zero pages, duplicates) a
 * wider factor alone made a light mode look better on a thin link (bench/adapt.sh, 25 Mbit/s) */
#define CORR_X_MIN        0.95
#define CORR_MAX          2.5
#define CORR_TAU_MUL      5
#define CORR_NEAR_NS      1000000000ull
#define CORR_FADE_MUL     2
/* Frames' ratios decay over RATIO_HORIZON bytes of data chunks, or tau_ratio, whichever is
 * slower (ratio_add). */
#define RATIO_HORIZON     (64.0 * 1024 * 1024)
#define MIN_RATIO         1e-6
#define MIN_RATE          1.0
#define ADAPT_RING        4096

/* An exponential moving average over irregular samples (see adapt.h). */
struct ema {
	double v;
	uint64_t t;       /* time of the last update */
	bool seen;        /* updated from an observation at least once */
};

/* A slow average for the estimate and a fast one (tau / FAST_DIV) to notice a step change: when
 * they disagree by more than the big-change factor in the same direction over two samples at
 * least CONFIRM_DIV fast time constants apart, the slow one jumps to the fast one. One sample is
 * not enough: under CPU contention acks are read in bunches and worker windows stall, and single
 * samples are off by 10x either way. */
struct est {
	struct ema slow, fast;
	int out_dir;          /* the fast average is above (1) or below (-1) the band, or in it (0) */
	uint64_t out_t;       /* ...since this time */
};
#define FAST_DIV 5
#define CONFIRM_DIV 2

/* Two sums decayed by exp(-age / tau) at each sample: their quotient is that of the last seconds'
 * totals, however unevenly the samples split them. */
struct dsum {
	double num, den;
};

struct amode {
	char name[ADAPT_NAME_MAX];
	unsigned threads;     /* 0 = all cores */
	unsigned group;       /* shares frame/probe corrections with its group (0: none) */
	struct ema speed;     /* input bytes per CPU-second */
	struct ema ratio;     /* output / input: from frames, fr.num / fr.den */
	/* its frames' output and input bytes, and input bytes and CPU-seconds, decayed (dsum_add):
	 * the ratio and speed of the bytes of the last seconds, not means of per-frame samples, of
	 * which one can give 0.1 and the next 1.5 where the bytes of both give 0.5 */
	struct dsum fr, fs;
	double lit_t;         /* the engine's lit_cum at the ratio's last update */
	uint64_t t_obs;       /* last observation of any kind */
	bool observed;
	/* Probes compress a sample on its own, frames compress up to frame_max together: with data
	 * whose redundancy spans more than a sample (RAM), a probe's ratio can be much worse than the
	 * same mode's frames, and by how much depends on the codec (lz4 hardly, zstd and lzma a lot).
	 * So probes keep their own ratio, and a mode's is predicted as its probe ratio x its own
	 * frame/probe correction, learnt whenever it is current (1 until then). */
	struct ema pratio;    /* output / input on probe samples */
	struct ema corr;      /* frame ratio / probe ratio, learnt while this mode was current */
	/* How this mode compares with the others on the same samples: log(probe ratio) less that of
	 * the mode probed beside it on the same sample (adapt_observe_probe_ref), plus that mode's
	 * offset. Data changes from one region to the next (zero pages, text, compressed files) move
	 * every mode's ratio at once; differences on one sample do not move with them, so another
	 * mode's ratio is predicted from the current mode's frames, scaled by the difference. */
	struct ema off;
	struct dsum offs;     /* its sums (off_add) */
	/* The same for speed: a probe's speed depends on its sample (zero chunks cost nothing, text
	 * a lot) and leaves out what every mode pays in the pipeline (reading, hashing, sending), so
	 * another mode's speed comes from the current mode's frames, and from how the two compared
	 * on the same samples (speed_of). */
	struct ema sfr;       /* input bytes per CPU-second, from frames only */
	struct ema pspeed;    /* ...and from probes only (their sums: ps) */
	struct dsum ps;
	struct ema soff;      /* log(probe speed) offset, as off */
	struct dsum soffs;
	uint64_t t_probe;     /* last probe */
	bool probed;
	double last_fr, last_pr;   /* the last frame sample's ratio, the last probe's */
	double prof_rate, prof_ratio;   /* the profile's (adapt_new), kept for first_mode */
};

struct adapt {
	pthread_mutex_t mu;          /* every entry point holds it (recursive: they call each other) */
	struct adapt_params p;
	size_t n;
	struct amode m[ADAPT_MAX_MODES];
	size_t cur;
	int forced;                  /* < 0: adaptive */

	struct est bw;               /* network bytes/s */
	struct ema lit;              /* data chunks / input, by bytes (adapt_observe_input) */
	struct dsum lits;
	struct est cpu;              /* fraction of cores free of competing load */
	uint64_t net_acc_bytes, net_acc_ns;
	bool net_acc_sat;
	bool net_seen;
	uint64_t net_last_sat;       /* last time a saturated sample arrived (or first sample) */
	uint64_t net_t;              /* last time any network sample was taken in */
	double net_max;              /* the highest throughput any sample showed */
	uint64_t net_ns;             /* time covered by the network samples taken in */
	bool sat_seen;               /* a saturated sample came in: the link was measured */
	double bw_meas;              /* bw.slow after the last network sample (not grown) */
	bool fat_seen;               /* ...or one, not saturated, above the estimate, or the socket
	                                seen empty FAT_IDLE_RUN acks or FAT_SEND_RUN frames in a
	                                row: it is fat */
	bool drained_seen;           /* the socket seen empty, as for fat_seen (not a sample) */
	unsigned q_idle_run;
	unsigned send_idle_run;      /* frames written into an empty socket in a row ... */
	uint64_t send_idle_t;        /* ... since */
	bool first_t_set;
	bool learning;               /* adapt_decide() holds the first mode until the link is learnt */
	uint64_t first_t;            /* the first adapt_decide(): the learning hold counts from it */
	uint64_t net_grow_t;         /* last time the app-limited growth was applied */
	uint64_t grow_after;         /* current wait before growing (backs off on failures) */
	bool grown;                  /* bw estimate inflated since the last saturated sample */
	bool grow_switch;            /* the last switch came from an inflated estimate... */
	size_t grow_from;            /* ...away from this mode... */
	uint64_t grow_switch_t;      /* ...at this time */

	bool evaluated;              /* adapt_decide() evaluated at least once */
	bool switched;               /* at least one switch happened */
	bool big_pending;            /* a big change in bw or cpu since the last evaluation */
	uint64_t last_eval, last_switch;
	double ref_bw, ref_cpu;      /* estimates at the last evaluation */
	size_t prev_mode;            /* the mode the last switch left */
	bool carried;                /* the last switch carried the ratio history (carry_ratio) */
	double switch_pred;          /* what the last switch predicted for the mode it chose */
	double lit_cum;              /* data-chunk input of all frames so far */
	unsigned flaps;              /* back-and-forth switches in a row (stretch the dwell) */

	bool probe_primed;
	uint64_t probe_t, last_probe;
	bool probed_once;
	double probe_tokens;         /* CPU ns the probes may still spend */
	double probe_reserved;       /* expected cost of the outstanding probe */
	size_t probe_mode;

	/* frames sent and not yet acknowledged (adapt_frame_sent / _acked): ring indexed by seq */
	struct adapt_sent { uint64_t seq, cum, t; int backlog; } ring[ADAPT_RING];  /* backlog: 1, 0, -1 unknown */
	uint64_t sent_cum;           /* wire bytes of all frames recorded */
	uint64_t next_seq;           /* lowest seq the next frame may have */
	bool any_sent;
	uint64_t first_sent_t;       /* the first frame went into the socket */
	bool narrowed;               /* the first mode was chosen again on a first backlog */
	bool ack_seen;
	uint64_t ack_seq, ack_cum, ack_t;   /* the previous ack */
	bool net_meter;              /* the transport samples the link itself (adapt_set_net_meter) */
	uint64_t q_idle_t;           /* last time the socket was seen empty (adapt_observe_queue) */
	bool q_idle_seen;

	uint64_t input_remaining, bytes_sent;
	unsigned decisions, switches, probes;
	uint64_t progress_t;         /* adapt_progress_due(): the last line */
	/* The first decision or progress line (elapsed_s, debug lines). Not first_t: the exporter's
	 * first progress line can come well before its first decision, and a learning hold counted
	 * from it ended before the link was learnt (t4920 failed 3 times in 4 with one clock). */
	uint64_t start_t;
	bool start_set;
	bool progress_any;
};

/* The engine's lock for the rest of the calling function (GCC's cleanup attribute): the walk's
 * thread and the export's sender thread (sender.c) both feed the engine. */
static pthread_mutex_t *lock_engine(const struct adapt *a)
{
	pthread_mutex_t *m = (pthread_mutex_t *)&a->mu;

	pthread_mutex_lock(m);
	return m;
}

static void unlock_engine(pthread_mutex_t **m)
{
	pthread_mutex_unlock(*m);
}

#define LOCKED(a) pthread_mutex_t *locked_ __attribute__((cleanup(unlock_engine))) = lock_engine(a)

/* The CPUs this process may run on (its affinity mask, as taskset or a cgroup's cpuset leaves
 * it) into *set, and how many; 0 when unknown. */
static int allowed_cpus(cpu_set_t *set)
{
	CPU_ZERO(set);
	if (sched_getaffinity(0, sizeof(*set), set) != 0)
		return 0;
	return CPU_COUNT(set);
}

void adapt_params_init(struct adapt_params *p)
{
	cpu_set_t set;
	long n = allowed_cpus(&set);

	if (n <= 0)
		n = sysconf(_SC_NPROCESSORS_ONLN);
	memset(p, 0, sizeof(*p));
	p->ncores = n > 0 ? (double)n : 1.0;
	p->initial_bw = 12.5e6;
	p->tau_rate_ns = 2000000000ull;
	p->tau_ratio_ns = 2000000000ull;
	p->tau_net_ns = 500000000ull;
	p->tau_cpu_ns = 500000000ull;
	p->first_weight = 1.0;
	p->hysteresis = 0.10;
	p->min_dwell_ns = 2000000000ull;
	p->decide_interval_ns = 1000000000ull;
	p->big_change = 0.5;
	p->probe_interval_ns = 500000000ull;
	p->probe_time_ns = 20000000ull;
	p->probe_span = 2;
	p->probe_budget = 0.05;
	p->probe_bytes = 1024 * 1024;
	p->net_grow_after_ns = 250000000ull;
	p->net_grow_rate = 3.0;
}

/* Replace zero fields with defaults, so a caller's `{ .ncores = 2 }` works too. */
static void params_fill(struct adapt_params *p, const struct adapt_params *in)
{
	struct adapt_params d;

	adapt_params_init(&d);
	*p = in ? *in : d;
#define FILL(f) do { if (!(p->f > 0)) p->f = d.f; } while (0)
	FILL(ncores); FILL(initial_bw); FILL(tau_rate_ns); FILL(tau_ratio_ns); FILL(tau_net_ns);
	FILL(tau_cpu_ns); FILL(first_weight); FILL(hysteresis); FILL(min_dwell_ns);
	FILL(decide_interval_ns); FILL(big_change); FILL(probe_interval_ns); FILL(probe_span);
	FILL(probe_budget); FILL(probe_bytes); FILL(probe_time_ns); FILL(net_grow_after_ns); FILL(net_grow_rate);
#undef FILL
	if (p->first_weight > 1)
		p->first_weight = 1;
}

static double clampd(double x, double lo, double hi)
{
	return x < lo ? lo : x > hi ? hi : x;
}

/* Blend sample x into e. The weight grows with the time since e was last updated, or with the
 * span of time the sample itself covers (dur), whichever is longer; the first observation gets
 * first_w against the prior. */
static void ema_add(struct ema *e, double x, uint64_t now, uint64_t dur, uint64_t tau, double first_w)
{
	double w;

	if (!e->seen) {
		w = first_w;
	} else {
		uint64_t dt = now > e->t ? now - e->t : 0;
		if (dur > dt)
			dt = dur;
		w = 1.0 - exp(-(double)dt / (double)tau);
	}
	e->v += w * (x - e->v);
	e->t = now;
	e->seen = true;
}

/* Add num/den to the sums s after decaying them by d, and set e (its value, time, seen) to their
 * quotient; a first sample moves e from its profile value by first_w. Returns the quotient. */
static double dsum_put(struct dsum *s, struct ema *e, double num, double den, double d, uint64_t now,
                       double first_w)
{
	double q;

	s->num = s->num * d + num;
	s->den = s->den * d + den;
	q = s->num / s->den;
	e->v = e->seen ? q : e->v + first_w * (q - e->v);
	e->t = now;
	e->seen = true;
	return q;
}

/* dsum_put, decayed by the time since the last sample over tau. */
static double dsum_add(struct dsum *s, struct ema *e, double num, double den, uint64_t now, uint64_t tau,
                       double first_w)
{
	double d = !e->seen ? 0.0 : now > e->t ? exp(-(double)(now - e->t) / (double)tau) : 1.0;

	return dsum_put(s, e, num, den, d, now, first_w);
}

static void est_add(struct adapt *a, struct est *e, double x, uint64_t now, uint64_t dur, uint64_t tau)
{
	double f = 1 + a->p.big_change;

	bool first = !e->slow.seen;
	int dir;

	ema_add(&e->slow, x, now, dur, tau, 1.0);
	ema_add(&e->fast, x, now, dur, HO_MAX(tau / FAST_DIV, 1), 1.0);
	dir = e->fast.v > e->slow.v * f ? 1 : e->fast.v < e->slow.v / f ? -1 : 0;
	if (first || dir == 0) {
		e->out_dir = 0;
	} else if (dir != e->out_dir) {
		e->out_dir = dir;
		e->out_t = now;
	} else if (now - e->out_t >= HO_MAX(tau / FAST_DIV, 1) * CONFIRM_DIV) {
		e->slow.v = e->fast.v;
		e->out_dir = 0;
		a->big_pending = true;
	}
}

/* Mode i's speed (input bytes per CPU-second on one core): the current mode's from its frames;
 * another's from the current mode's frames and how the two compared on the same samples;
 * otherwise from all its observations (or the profile). */
static double speed_of(const struct adapt *a, size_t i)
{
	const struct amode *m = &a->m[i], *c = &a->m[a->cur];

	if (i == a->cur && m->sfr.seen && m->t_obs >= a->last_switch)
		return m->sfr.v;
	if (i != a->cur && m->soff.seen && c->soff.seen && c->sfr.seen && c->t_obs >= a->last_switch) {
		double rel = exp(m->soff.v - c->soff.v);   /* i's probes' speed over the current mode's */
		if (!(c->pspeed.seen && c->pspeed.v > 0))
			return c->sfr.v * rel;
		/* Costs per byte add up: what the pipeline pays around any mode (reading, hashing,
		 * the sent set, records, threads) is the current mode's frames' cost less its probes';
		 * i pays that and its own probes' cost. Scaling the frames' speed by the probes' speeds
		 * charged that overhead at i's rate: from xor-zstd1's frames (40 MB/s a core of data
		 * chunks, its probes 300) delta-zstd3 (probes 7 times slower) was predicted at 6 MB/s
		 * and CPU-bound at 25 Mbit/s, where its own frames ran at 25-35 and it was the best
		 * mode (bench/adapt.sh). */
		double pc = 1.0 / c->pspeed.v, over = HO_MAX(0.0, 1.0 / c->sfr.v - pc);
		return 1.0 / (over + pc / rel);
	}
	return m->speed.v;
}

/* The cores mode i can use now. */
static double cores_for(const struct adapt *a, size_t i)
{
	double threads = a->m[i].threads ? (double)a->m[i].threads : a->p.ncores;
	double cores = a->p.ncores * clampd(a->cpu.slow.v, 0.0, 1.0);
	double use = HO_MIN(threads, cores);

	/* even a saturated machine gives us a sliver; never predict zero */
	return use < 0.02 ? 0.02 : use;
}

/* Processing rate of mode i on the cores we can have now. */
static double proc_rate(const struct adapt *a, size_t i)
{
	return HO_MAX(speed_of(a, i) * cores_for(a, i), MIN_RATE);
}

/* Mode i's frame/probe correction: its own once learnt, else the one its group learnt last
 * (a mode never current would otherwise be judged by its samples against the current mode's
 * frames, and a strong mode whose frames gain much over samples would never get its turn). */
static double corr_of(const struct adapt *a, size_t i)
{
	const struct amode *m = &a->m[i], *g = NULL;

	if (!m->corr.seen) {
		for (size_t j = 0; m->group && j < a->n; j++)
			if (a->m[j].group == m->group && a->m[j].corr.seen && (!g || a->m[j].corr.t > g->corr.t))
				g = &a->m[j];
		m = g;
	}
	if (!m)
		return 1.0;
	/* a correction learnt long ago fades: it came from noisy samples, and a mode made to look
	 * worse than it is by one would never be current again to learn better */
	double age = a->last_eval > m->corr.t ? (double)(a->last_eval - m->corr.t) : 0.0;
	return exp(m->corr.v * exp(-age / ((double)a->p.tau_ratio_ns * CORR_FADE_MUL)));
}

/* Learn mode i's frame/probe correction from its last frame sample and its last probe, taken
 * within CORR_NEAR_NS of each other: the nearest data to each other there is (the probe's sample
 * is the newest input, the last frame the input just before). Still of different data, so noisy:
 * averaged in log space over CORR_TAU_MUL ratio time constants, the first one taken at half weight
 * against no correction, and clamped to what frame and sample sizes can explain. */
static void corr_learn(struct adapt *a, size_t i, uint64_t now)
{
	struct amode *m = &a->m[i];
	uint64_t dt = m->t_obs > m->t_probe ? m->t_obs - m->t_probe : m->t_probe - m->t_obs;

	if (dt > CORR_NEAR_NS || !(m->last_pr > 0) || !(m->last_fr > 0))
		return;
	ema_add(&m->corr, log(clampd(m->last_fr / m->last_pr, CORR_MIN, CORR_MAX)), now, 0,
	        a->p.tau_ratio_ns * CORR_TAU_MUL, 0.5);
}

/* The current mode's ratio stands on frames: its own since it became current, or the history the
 * switch to it carried over (carry_ratio). */
static bool cur_framed(const struct adapt *a)
{
	const struct amode *c = &a->m[a->cur];

	return c->ratio.seen && ((c->observed && c->t_obs >= a->last_switch) || a->carried);
}

/* The ratio to expect from mode i: the current mode's from its frames (and, from a switch to its
 * first frames, the history carried over to it: carry_ratio); another's from the current mode's
 * and how the two compared on the same samples. Otherwise from its probes scaled by the
 * probe-to-frame correction, else its frames or the profile. (From their own probes, two modes
 * stood against samples seconds apart: at 100 Mbit/s half a second after a switch to
 * delta-zstd3, whose last probe had incompressible data, xor-lz4 was predicted from the 20 KiB of
 * duplicates it was calibrated on at the start, 72 times smaller, and the engine went to it.) */
static double eff_ratio(const struct adapt *a, size_t i)
{
	const struct amode *m = &a->m[i], *c = &a->m[a->cur];
	bool framed = cur_framed(a);

	/* the current mode: as above (else its probes, fresher than frames from an earlier turn,
	 * unless it was never probed) */
	if (i == a->cur && m->ratio.seen && (framed || (m->observed && !m->probed)))
		return m->ratio.v;
	/* another: (and how differently their frames gain over samples, unless of one group) */
	if (i != a->cur && m->off.seen && c->off.seen && framed)
		return c->ratio.v * exp(m->off.v - c->off.v) *
		       (m->group && m->group == c->group ? 1.0 :
		        clampd(corr_of(a, i) / corr_of(a, a->cur), CORR_X_MIN, 1 / CORR_X_MIN));
	if (m->probed)
		return m->pratio.v * corr_of(a, i);
	return m->ratio.v;
}

/* Until a sample showed the link saturated, its estimate is a lower bound (what it carried) or a
 * guess. Once it was seen draining what we gave it, the link is taken to carry what any mode makes
 * (adapt_decide takes the cheapest) until a saturated sample says otherwise; from then on the
 * samples measure it and the ratios count again. Growing the estimate from what a CPU-bound strong
 * mode carried (a tenth of a 1 Gbit/s link) took seconds, spent in modes at half the cheapest
 * one's speed (bench/adapt.sh, 1 Gbit/s: 1.13 to 1.62 times xor-lz4's time). */
static bool link_unbounded(const struct adapt *a)
{
	/* the socket's emptiness, not a sample above the guess: with tbf's burst and ack timing, a
	 * 100 Mbit/s link showed 124 Mbit/s unsaturated before its first saturated sample */
	return a->drained_seen && !a->sat_seen;
}

/* A saturated sample measured the link, and it has not been seen draining since (link_unbounded):
 * the estimate is the link's. */
static bool link_measured(const struct adapt *a)
{
	return a->sat_seen && !link_unbounded(a);
}

/* C(m) of mode i on a link of bw bytes/s (predict: the estimate's). */
static double predict_at(const struct adapt *a, size_t i, double bw, double *p_out, double *n_out)
{
	double p = proc_rate(a, i);
	double n = link_unbounded(a) ? HUGE_VAL : HO_MAX(bw, MIN_RATE) / HO_MAX(eff_ratio(a, i), MIN_RATIO);

	if (p_out)
		*p_out = p;
	if (n_out)
		*n_out = n;
	return HO_MIN(p, n);
}

static double predict(const struct adapt *a, size_t i, double *p_out, double *n_out)
{
	return predict_at(a, i, a->bw.slow.v, p_out, n_out);
}

/* Mode i on a link of bw bytes/s leaves the CPU idle most of the time (only once the link was
 * measured, never on a guess, grown or initial): predicted to process at least
 * PEER_HEADROOM times what the link takes of it, by its prediction and by its own probes' speed
 * alike (a speed carried over from another mode's frames can be far off: delta-zstd3 predicted
 * at 1.65e9 B/s from xor-lz4's frames ran at a fifth of that). */
static bool net_bound_idle(const struct adapt *a, size_t i, double bw)
{
	double p, n;

	if (!link_measured(a) || a->grown)
		return false;
	predict_at(a, i, bw, &p, &n);
	p = HO_MIN(p, a->m[i].speed.v * cores_for(a, i));
	return p >= PEER_HEADROOM * n;
}

/* The current mode, on the estimate (adapt.h). */
bool adapt_cpu_idle(const struct adapt *a)
{
	LOCKED(a);
	return net_bound_idle(a, a->cur, a->bw.slow.v);
}

/* The mode with the highest predicted consumption rate on a link of bw bytes/s; ties go to the
 * smaller ratio (fewer bytes on a shared link), then to the lower index. Then the cheapest mode
 * (the table's order) predicted within half the hysteresis of it: predictions that close are one
 * within the other's noise, and the cheaper mode keeps CPU in hand. At 100 Mbit/s, after a trial
 * of xor-lz4, delta-zstd3 was predicted 3 % ahead of xor-zstd1, network-bound both (processing
 * predicted at 1.65e9 B/s from xor-lz4's frames of chunks that XOR to zeros), and ran CPU-bound
 * at a fifth of that. */
static size_t best_mode(const struct adapt *a, double bw)
{
	size_t best = 0;
	double bc = predict_at(a, 0, bw, NULL, NULL);

	for (size_t i = 1; i < a->n; i++) {
		double c = predict_at(a, i, bw, NULL, NULL);
		if (c > bc * (1 + 1e-9) ||
		    (c >= bc * (1 - 1e-9) && eff_ratio(a, i) < eff_ratio(a, best))) {
			best = i;
			bc = c;
		}
	}
	/* ...unless the CPU idles whichever of them runs: then it is the strongest of those that idle
	 * too (the table's last), a stronger mode makes no more bytes than a cheaper one (the delta
	 * modes keep an XOR record when it is smaller; zstd-3 over zstd-1 over lz4), and predictions
	 * that close come from samples that told them apart by nothing (a region that hardly
	 * compresses: at 5 Mbit/s the engine went to delta-lz4, 0.3 % ahead of delta-zstd3) */
	if (net_bound_idle(a, a->cur, bw) && net_bound_idle(a, best, bw)) {
		for (size_t i = a->n; i-- > best + 1;)
			if (net_bound_idle(a, i, bw) && predict_at(a, i, bw, NULL, NULL) >= bc * (1 - a->p.hysteresis / 2))
				return i;
		return best;
	}
	for (size_t i = 0; i < best; i++)
		if (predict_at(a, i, bw, NULL, NULL) >= bc * (1 - a->p.hysteresis / 2))
			return i;
	return best;
}

/* The mode to start in. The link is unknown until it is measured (adapt_decide's learning hold),
 * so not the best at the guess (initial_bw): the one that loses least, by the profile at full CPU,
 * wherever between FIRST_BW_LO and FIRST_BW_HI the link turns out to be. The best at the 100 Mbit/s
 * guess was delta-zstd3, at a third of xor-zstd1's rate at 1 Gbit/s by the profile, and on a
 * guest's compressible first pages at 100 Mbit/s CPU-bound at 80-110 MB/s of input where
 * xor-zstd1 ran at 180-300, for the hold's whole second; xor-zstd1 loses 8 % at worst, on the
 * thin links, where the hold is shortest (the link saturates at once).
 * ...and again, up to a lower bound hi, on the first frame written into a backlog while the engine
 * still holds that mode (adapt_frame_sent): the link did not carry what went before it in the
 * time it had, which bounds it above, and the mode that loses least up to that bound takes the
 * first full frames (the warm-up gives the frame after a backlog the mode's whole size, and the
 * first decision comes only with the first link sample: at 5 Mbit/s the first full frame, 9.6 MB
 * of an export's 18.9, went out in xor-zstd1, 1.03 of delta-zstd3's time, 1.03 at 10 Mbit/s).
 * The profile, not the estimates: those come from the calibration's 4 KiB samples then, on which
 * every mode ties. A tie keeps mode `keep` (at the start, the table's first). */
#define FIRST_BW_LO    625e3       /* 5 Mbit/s */
#define FIRST_BW_HI    125e6       /* 1 Gbit/s */
#define FIRST_BW_STEPS 16
static double prof_rate_at(const struct adapt *a, size_t i, double bw)
{
	return HO_MIN(a->m[i].prof_rate * cores_for(a, i), bw / a->m[i].prof_ratio);
}

static size_t first_mode(const struct adapt *a, size_t keep, double hi)
{
	size_t first = keep;
	double first_loss = HUGE_VAL;

	hi = clampd(hi, FIRST_BW_LO, FIRST_BW_HI);
	for (size_t k = 0; k < a->n + 1; k++) {
		size_t i = k == 0 ? keep : k - 1;       /* `keep` first: ties keep it */
		double loss = 1.0;
		for (int s = 0; s <= FIRST_BW_STEPS; s++) {
			double bw = FIRST_BW_LO * pow(hi / FIRST_BW_LO, (double)s / FIRST_BW_STEPS), top = 0;
			for (size_t j = 0; j < a->n; j++)
				top = HO_MAX(top, prof_rate_at(a, j, bw));
			loss = HO_MAX(loss, top / prof_rate_at(a, i, bw));
		}
		if (loss < first_loss * (1 - 1e-9)) {
			first = i;
			first_loss = loss;
		}
	}
	return first;
}

struct adapt *adapt_new(const struct adapt_mode_profile *modes, size_t n, const struct adapt_params *params)
{
	struct adapt *a;

	if (!modes || n == 0 || n > ADAPT_MAX_MODES) {
		ho_err("invalid mode table: %zu modes (1..%d allowed)", n, ADAPT_MAX_MODES);
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		if (!modes[i].name || !modes[i].name[0] || !(modes[i].rate > 0) || !(modes[i].ratio > 0) ||
		    !isfinite(modes[i].rate) || !isfinite(modes[i].ratio)) {
			ho_err("invalid profile for mode %zu '%s': rate and ratio must be > 0", i,
			       modes[i].name ? modes[i].name : "(null)");
			return NULL;
		}
	}
	a = calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	pthread_mutexattr_t ma;
	pthread_mutexattr_init(&ma);
	pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
	pthread_mutex_init(&a->mu, &ma);
	pthread_mutexattr_destroy(&ma);
	params_fill(&a->p, params);
	a->n = n;
	for (size_t i = 0; i < n; i++) {
		snprintf(a->m[i].name, sizeof(a->m[i].name), "%s", modes[i].name);
		a->m[i].threads = modes[i].threads;
		a->m[i].group = modes[i].group;
		a->m[i].speed.v = a->m[i].prof_rate = modes[i].rate;
		a->m[i].ratio.v = a->m[i].prof_ratio = modes[i].ratio;
	}
	a->forced = -1;
	a->bw.slow.v = a->bw.fast.v = a->p.initial_bw;
	a->cpu.slow.v = a->cpu.fast.v = 1.0;
	a->ref_bw = a->bw.slow.v;
	a->ref_cpu = a->cpu.slow.v;
	a->input_remaining = UINT64_MAX;
	a->grow_after = a->p.net_grow_after_ns;
	a->cur = first_mode(a, 0, FIRST_BW_HI);
	a->learning = true;
	return a;
}

void adapt_free(struct adapt *a)
{
	if (a)
		pthread_mutex_destroy(&a->mu);
	free(a);
}

size_t adapt_mode_count(const struct adapt *a)
{
	return a->n;
}

const char *adapt_mode_name(const struct adapt *a, size_t idx)
{
	return idx < a->n ? a->m[idx].name : NULL;
}

int adapt_mode_index(const struct adapt *a, const char *name)
{
	for (size_t i = 0; i < a->n; i++)
		if (strcmp(a->m[i].name, name) == 0)
			return (int)i;
	return HO_ENOENT;
}

int adapt_force(struct adapt *a, int idx)
{
	LOCKED(a);
	if (idx >= (int)a->n)
		return HO_EINVAL;
	a->forced = idx < 0 ? -1 : idx;
	if (idx >= 0)
		a->cur = (size_t)idx;
	return 0;
}

/* Flag a big change when an estimate left the band around its value at the last evaluation. */
static void check_big(struct adapt *a, double now_v, double ref)
{
	double f = 1 + a->p.big_change;

	if (ref <= 0)
		return;
	if (now_v > ref * f || now_v < ref / f)
		a->big_pending = true;
}

static void cpu_add(struct adapt *a, double frac, bool lower_bound, uint64_t now, uint64_t dur)
{
	frac = clampd(frac, 0.0, 1.0);
	if (lower_bound && frac <= a->cpu.slow.v)
		return;
	est_add(a, &a->cpu, frac, now, dur, a->p.tau_cpu_ns);
	check_big(a, a->cpu.slow.v, a->ref_cpu);
}

/* Add a frame of mode m to its ratio sums (fr), decayed by the slower of time (tau_ratio) and
 * input (RATIO_HORIZON bytes of data chunks since their last update). The ratio tells whether the
 * link or the CPU will hold us back, over the data the sender's window and the next seconds hold,
 * not over one region of it: on a thin link a frame of 16 MiB of zero-XOR pages is one short
 * spell, yet by time alone it was the last two seconds, all of them. At 25 Mbit/s a first frame
 * at 0.044 made every mode CPU-bound at 70-110 MB/s (the link took 3 MB/s), and the engine left
 * delta-zstd3 for xor-zstd1, for good (4 % longer). Where two seconds hold more than the horizon
 * (a fat link), time rules as before. */
static void ratio_add(struct adapt *a, struct amode *m, double out, double in, uint64_t now)
{
	double d = 1.0;

	a->lit_cum += in;
	if (m->ratio.seen) {
		/* the input since the last update, this frame's included: what it pushed back */
		double xt = now > m->ratio.t ? (double)(now - m->ratio.t) / (double)a->p.tau_ratio_ns : 0.0;
		double xb = HO_MAX(0.0, a->lit_cum - m->lit_t) / RATIO_HORIZON;
		d = exp(-HO_MIN(xt, xb));
	}
	dsum_put(&m->fr, &m->ratio, out, in, d, now, a->p.first_weight);
	m->ratio.v = HO_MAX(m->ratio.v, MIN_RATIO);
	m->lit_t = a->lit_cum;
}

static void mode_add(struct adapt *a, size_t i, uint64_t in, uint64_t out, uint64_t cpu_ns,
                     uint64_t wall_ns, uint64_t now, bool probe)
{
	struct amode *m = &a->m[i];
	double r = HO_MAX((double)out / (double)in, MIN_RATIO);

	if (probe) {
		ema_add(&m->speed, (double)in / ((double)cpu_ns / NS_PER_S), now, wall_ns, a->p.tau_rate_ns,
		        a->p.first_weight);
		dsum_add(&m->ps, &m->pspeed, (double)in, (double)cpu_ns / NS_PER_S, now, a->p.tau_rate_ns, 1.0);
	} else {
		/* sfr: the frames' speed alone; speed: also moved by probes in between */
		double sp = dsum_add(&m->fs, &m->sfr, (double)in, (double)cpu_ns / NS_PER_S, now, a->p.tau_rate_ns, 1.0);
		m->speed.v = m->speed.seen ? sp : m->speed.v + a->p.first_weight * (sp - m->speed.v);
		m->speed.t = now;
		m->speed.seen = true;
		ratio_add(a, m, (double)out, (double)in, now);
		m->last_fr = r;
		m->t_obs = now;
		m->observed = true;
		/* first frames of a mode probed before: a first correction until it is probed again */
		if (i == a->cur && m->probed && !m->corr.seen)
			corr_learn(a, i, now);
		return;
	}
	ema_add(&m->pratio, r, now, wall_ns, a->p.tau_ratio_ns, 1.0);
	m->last_pr = r;
	m->t_probe = now;
	m->probed = true;
	if (!m->ratio.seen)
		m->ratio.v = m->ratio.v * (1 - a->p.first_weight) + r * a->p.first_weight;
	/* a probe of the mode whose frames we see: how much better its frames do than samples */
	if (i == a->cur && m->observed && m->ratio.seen)
		corr_learn(a, i, now);
}

int adapt_observe_mode(struct adapt *a, size_t mode_idx, uint64_t input_bytes, uint64_t output_bytes,
                       uint64_t cpu_ns, uint64_t wall_ns, unsigned threads, uint64_t now_ns)
{
	LOCKED(a);
	if (mode_idx >= a->n)
		return HO_EINVAL;
	if (input_bytes == 0 || cpu_ns == 0)
		return 0;
	mode_add(a, mode_idx, input_bytes, output_bytes, cpu_ns, wall_ns, now_ns, false);
	if (wall_ns > 0) {
		double t = threads ? (double)threads : 1.0;
		double share = (double)cpu_ns / (t * (double)wall_ns);
		/* the cores we actually got, as a fraction of the machine, over a window long enough to
		 * tell: exact when we were held back, only a lower bound when every thread ran flat out */
		if (wall_ns >= SHARE_MIN_WALL_NS)
			cpu_add(a, t * HO_MIN(share, 1.0) / a->p.ncores, share >= FULL_SHARE, now_ns, wall_ns);
	}
	return 0;
}

int adapt_observe_probe(struct adapt *a, size_t mode_idx, uint64_t input_bytes, uint64_t output_bytes,
                        uint64_t cpu_ns, uint64_t wall_ns, uint64_t now_ns)
{
	LOCKED(a);
	if (mode_idx >= a->n)
		return HO_EINVAL;
	a->probes++;
	if (a->probe_reserved > 0 && mode_idx == a->probe_mode) {
		a->probe_tokens += a->probe_reserved;    /* give back the estimate, charge the truth */
		a->probe_reserved = 0;
	}
	/* probes before the first adapt_probe_due() (a calibration of every mode at the start) are
	 * a one-time cost, not the running budget's: charged, they would hold the first probes of
	 * the running export back for a second or more, while it runs on a guess */
	if (a->probe_primed)
		a->probe_tokens -= (double)cpu_ns;
	if (input_bytes == 0 || cpu_ns == 0)
		return 0;
	mode_add(a, mode_idx, input_bytes, output_bytes, cpu_ns, wall_ns, now_ns, true);
	return 0;
}

/* Add a comparison to mode m's offset e: on one sample m gave num where the reference gave den
 * (output bytes for ratios; for speeds, the reference's CPU time where m took den), so
 * log(num / den) is m's offset from the reference's, re (anchored at 0 on the first comparison:
 * only differences count). e is the log of the quotient of the decayed sums s (dsum_add's decay),
 * not an average of per-sample logs: a sample counts as much as its bytes (or CPU time) do. One
 * sample of all but duplicate chunks (xor-lz4 255 B against 159 for delta-zstd3, from 20 KiB)
 * otherwise weighed as much as a megabyte of text, and on a 25 Mbit/s link the engine left
 * xor-zstd1 for xor-lz4 predicted at 9 times its speed, to run at a sixth of it for 5 s. */
static void off_add(struct adapt *a, struct ema *e, struct dsum *s, struct ema *re, double num, double den,
                    uint64_t now)
{
	if (!re->seen) {
		re->v = e->seen ? e->v - log(num / den) : 0.0;
		re->t = now;
		re->seen = true;
		if (e->seen)
			return;
	}
	e->v = log(dsum_add(s, e, num, den * exp(-re->v), now, a->p.tau_ratio_ns, 1.0));
}

int adapt_observe_probe_ref(struct adapt *a, size_t mode_idx, uint64_t input_bytes, uint64_t output_bytes,
                            uint64_t cpu_ns, uint64_t wall_ns, size_t ref_idx, uint64_t ref_output,
                            uint64_t ref_cpu_ns, uint64_t now_ns)
{
	LOCKED(a);
	struct amode *m, *r;
	int rc;

	if (mode_idx >= a->n || ref_idx >= a->n)
		return HO_EINVAL;
	if ((rc = adapt_observe_probe(a, mode_idx, input_bytes, output_bytes, cpu_ns, wall_ns, now_ns)))
		return rc;
	if (mode_idx == ref_idx || input_bytes == 0 || output_bytes == 0 || ref_output == 0)
		return 0;
	m = &a->m[mode_idx];
	r = &a->m[ref_idx];
	ho_debug("probe at %.3f s: '%s' %" PRIu64 " -> %" PRIu64 " B in %.1f ms, '%s' %" PRIu64 " B in %.1f ms",
	         (double)(now_ns - a->start_t) / NS_PER_S, m->name, input_bytes, output_bytes, cpu_ns / 1e6, r->name,
	         ref_output, ref_cpu_ns / 1e6);
	off_add(a, &m->off, &m->offs, &r->off, (double)output_bytes, (double)ref_output, now_ns);
	if (cpu_ns && ref_cpu_ns)
		off_add(a, &m->soff, &m->soffs, &r->soff, (double)ref_cpu_ns, (double)cpu_ns, now_ns);
	return 0;
}

void adapt_observe_net(struct adapt *a, uint64_t acked_bytes, uint64_t wall_ns, bool saturated,
                       uint64_t now_ns)
{
	LOCKED(a);
	double x;

	if (a->net_acc_ns == 0 && a->net_acc_bytes == 0)
		a->net_acc_sat = true;
	a->net_acc_bytes += acked_bytes;
	a->net_acc_ns += wall_ns;
	a->net_acc_sat = a->net_acc_sat && saturated;
	if (a->net_acc_ns < NET_MIN_WINDOW_NS)
		return;
	x = (double)a->net_acc_bytes / ((double)a->net_acc_ns / NS_PER_S);
	a->net_t = now_ns;
	a->net_max = HO_MAX(a->net_max, x);
	a->net_ns += a->net_acc_ns;
	if (!a->net_seen) {
		a->net_seen = true;
		a->net_last_sat = now_ns;
		a->net_grow_t = now_ns;
	}
	ho_debug("link sample at %.3f s: %.3g B/s over %.0f ms, %s (estimate %.3g B/s%s)",
	         (double)(now_ns - a->start_t) / NS_PER_S, x, (double)a->net_acc_ns / 1e6,
	         a->net_acc_sat ? "saturated" : "not saturated", a->bw.slow.v, a->grown ? ", grown" : "");
	if (a->net_acc_sat) {
		/* an inflated value was a guess: let the truth replace it at once, but not below what
		 * was measured before the guess and what the link carried during it (bw_meas): one
		 * window of a receiver that stalled (a CPU it shares with us, its fdatasync) showed a
		 * 1 Gbit/s link at 120 Mbit/s, and the engine went back to zstd for seconds */
		/* The first after the link was seen draining (link_unbounded) likewise falls no lower
		 * than the most it carried (net_max): on 2 shared cores a receiver that fell 10 MB
		 * behind showed a 1 Gbit/s link, drained till then, at 296 Mbit/s, and the engine left
		 * xor-lz4 for xor-zstd1 (bench/adapt.sh: 5.3 s against 4.2) */
		bool floor = a->grown || link_unbounded(a);
		double fl = a->grown ? a->bw_meas : a->net_max;
		est_add(a, &a->bw, floor ? HO_MAX(x, fl) : x, now_ns,
		        floor ? a->p.tau_net_ns * 8 : a->net_acc_ns, a->p.tau_net_ns);
		/* the first: the link is being measured, and the cheapest mode taken while it had only
		 * been seen draining (link_unbounded) gives way at once, dwell or not */
		if (!a->sat_seen)
			a->big_pending = true;
		a->sat_seen = true;
		a->grown = false;
		a->net_last_sat = now_ns;
		a->net_grow_t = now_ns;
	} else if (x > a->bw.slow.v) {
		/* app-limited: the link carried at least x, maybe much more */
		a->fat_seen = true;
		est_add(a, &a->bw, x, now_ns, a->net_acc_ns, a->p.tau_net_ns);
	}
	a->net_acc_bytes = 0;
	a->net_acc_ns = 0;
	if (!a->grown)
		a->bw_meas = a->bw.slow.v;
	else    /* an unsaturated sample during a growth trial: the link carried that much */
		a->bw_meas = HO_MAX(a->bw_meas, HO_MIN(x, a->bw.slow.v));
	check_big(a, a->bw.slow.v, a->ref_bw);
}

int adapt_frame_sent(struct adapt *a, uint64_t seq, uint64_t wire_bytes, uint64_t queued_bytes, uint64_t now_ns)
{
	LOCKED(a);
	struct adapt_sent *r;

	if (a->any_sent && seq < a->next_seq)
		return HO_ESEQ;
	a->sent_cum += wire_bytes;
	a->bytes_sent += wire_bytes;
	r = &a->ring[seq % ADAPT_RING];
	r->seq = seq;
	r->cum = a->sent_cum;
	r->t = now_ns;
	r->backlog = queued_bytes == UINT64_MAX ? -1 : queued_bytes > 0;
	if (queued_bytes == 0) {
		if (!a->send_idle_run++)
			a->send_idle_t = now_ns;
		if (!a->drained_seen && a->send_idle_run >= FAT_SEND_RUN && now_ns - a->send_idle_t >= FAT_SEND_NS) {
			a->fat_seen = a->drained_seen = true;
			ho_debug("the link drained %u frames in a row over %.0f ms: it is not the bottleneck",
			         a->send_idle_run, (double)(now_ns - a->send_idle_t) / 1e6);
		}
	} else {
		a->send_idle_run = 0;
		/* the first backlog while the first mode holds: see first_mode */
		if (queued_bytes != UINT64_MAX && a->any_sent && !a->narrowed && a->forced < 0 && !a->decisions &&
		    !a->sat_seen && !a->fat_seen && now_ns > a->first_sent_t) {
			double hi = (double)(a->sent_cum - wire_bytes) / ((double)(now_ns - a->first_sent_t) / NS_PER_S);
			size_t m = first_mode(a, a->cur, hi);
			a->narrowed = true;
			if (m != a->cur) {
				ho_debug("mode '%s' -> '%s': the link carries less than %.3g B/s (a backlog at %.0f ms)",
				         a->m[a->cur].name, a->m[m].name, hi, (double)(now_ns - a->first_sent_t) / 1e6);
				a->cur = m;
				a->switches++;
			}
		}
	}
	if (!a->any_sent)
		a->first_sent_t = now_ns;
	a->any_sent = true;
	a->next_seq = seq + 1;
	if (!a->ack_seen) {
		/* the first ack is measured from the first send: nothing was outstanding before */
		a->ack_seen = true;
		a->ack_seq = UINT64_MAX;
		a->ack_cum = a->sent_cum - wire_bytes;
		a->ack_t = now_ns;
	}
	return 0;
}

/* Were all frames after the previous ack up to seq written into a backlog? */
static bool acked_saturated(const struct adapt *a, uint64_t seq)
{
	const struct adapt_sent *r = &a->ring[seq % ADAPT_RING];
	uint64_t first;

	if (a->ack_seq == UINT64_MAX)
		return false;                           /* the first sample: the pipe was empty */
	if (a->q_idle_seen && a->q_idle_t > a->ack_t)
		return false;                           /* the link ran dry since the previous ack */
	if (r->backlog < 0)
		return r->t <= a->ack_t;
	first = seq - a->ack_seq > ADAPT_RING ? seq - ADAPT_RING + 1 : a->ack_seq + 1;
	for (uint64_t s = first; s <= seq; s++) {
		const struct adapt_sent *e = &a->ring[s % ADAPT_RING];
		if (e->seq == s && e->backlog == 0)
			return false;
	}
	return true;
}

int adapt_frame_acked(struct adapt *a, uint64_t seq, uint64_t now_ns)
{
	LOCKED(a);
	const struct adapt_sent *r = &a->ring[seq % ADAPT_RING];

	if (!a->any_sent || seq >= a->next_seq)
		return HO_ESEQ;
	if (a->ack_seq != UINT64_MAX && seq <= a->ack_seq)
		return 0;                               /* a repeat: nothing new */
	if (r->seq != seq) {
		/* fell out of the ring: no sample, start over from here */
		a->ack_seq = seq;
		a->ack_t = now_ns;
		a->ack_cum = a->sent_cum;
		return 0;
	}
	if (!a->net_meter && r->cum > a->ack_cum && now_ns > a->ack_t)
		adapt_observe_net(a, r->cum - a->ack_cum, now_ns - a->ack_t, acked_saturated(a, seq), now_ns);
	a->ack_cum = r->cum;
	a->ack_seq = seq;
	a->ack_t = now_ns;
	return 0;
}

void adapt_observe_input(struct adapt *a, uint64_t input_bytes, uint64_t literal_bytes, uint64_t now_ns)
{
	LOCKED(a);
	if (input_bytes == 0)
		return;
	dsum_add(&a->lits, &a->lit, (double)HO_MIN(literal_bytes, input_bytes), (double)input_bytes, now_ns,
	         a->p.tau_ratio_ns, 1.0);
}

/* The share of input that is data chunks, over the last seconds: the engine's rates are of those
 * bytes (never below a fiftieth: a stretch of duplicates alone would make the input's rate
 * infinite). */
static double lit_share(const struct adapt *a)
{
	return a->lit.seen ? clampd(a->lit.v, 0.02, 1.0) : 1.0;
}

void adapt_set_net_meter(struct adapt *a, bool on)
{
	LOCKED(a);
	a->net_meter = on;
}

void adapt_observe_queue(struct adapt *a, uint64_t queued_bytes, uint64_t now_ns)
{
	LOCKED(a);
	if (queued_bytes == 0) {
		a->q_idle_t = now_ns;
		a->q_idle_seen = true;
		/* the link drained all we gave it, time after time: it is faster than we produce */
		if (++a->q_idle_run >= FAT_IDLE_RUN)
			a->fat_seen = a->drained_seen = true;
	} else {
		a->q_idle_run = 0;
	}
}

void adapt_observe_cpu(struct adapt *a, double available_fraction, uint64_t now_ns)
{
	LOCKED(a);
	if (!isfinite(available_fraction))
		return;
	cpu_add(a, available_fraction, false, now_ns, 0);
}

/* The clock of elapsed_s starts at the first decision or progress line. */
static void mark_start(struct adapt *a, uint64_t now_ns)
{
	if (!a->start_set) {
		a->start_set = true;
		a->start_t = now_ns;
	}
}

bool adapt_progress_due(struct adapt *a, uint64_t now_ns, uint64_t interval_ns, bool force)
{
	LOCKED(a);
	if (!force && a->progress_any && now_ns - a->progress_t < interval_ns)
		return false;
	a->progress_any = true;
	a->progress_t = now_ns;
	mark_start(a, now_ns);
	return true;
}

void adapt_set_progress(struct adapt *a, uint64_t input_remaining, uint64_t bytes_sent)
{
	LOCKED(a);
	a->input_remaining = input_remaining;
	a->bytes_sent = bytes_sent;
}

/* While the link has not been the bottleneck for a while, what it can carry is unknown above what
 * it did carry (a CPU-bound heavy mode on a fat link never learns how fat it is): let the estimate
 * grow so a lighter mode gets its chance. If the link really is that fat, the lighter mode stays;
 * if not, it fills the link, a saturated sample brings the estimate back, the engine returns to the
 * heavier mode, and the wait before the next try doubles (up to 64 times the first). */
static void net_grow(struct adapt *a, uint64_t now)
{
	uint64_t from;

	/* a link never seen saturated is no measured link to grow from: its estimate is the guess or
	 * what it carried, and the samples that carried more raise it already. Grown from the guess
	 * after the learning hold (a compressible start, CPU-bound, never fills 100 Mbit/s), it sent
	 * the engine from xor-zstd1 to a trial of xor-lz4 and back (14 of 15 runs at 100 Mbit/s). */
	if (!a->net_seen || !a->sat_seen || a->p.net_grow_after_ns == UINT64_MAX || now <= a->net_grow_t ||
	    link_unbounded(a))
		return;
	/* wait from the last saturated sample or the last switch, whichever is later: a new mode's
	 * own samples come first */
	from = a->net_last_sat;
	if (a->switched && a->last_switch > from)
		from = a->last_switch;
	if (now - from < a->grow_after)
		return;
	from = HO_MAX(a->net_grow_t, from + a->grow_after);
	if (now > from)
		a->bw.fast.v = a->bw.slow.v *= pow(1 + a->p.net_grow_rate, (double)(now - from) / NS_PER_S);
	/* a guess, not a blank cheque: a link NET_GROW_MAX times faster than anything seen so far
	 * makes every light mode win already (and the sender's ack window follows the estimate) */
	if (a->net_max > 0 && a->bw.slow.v > a->net_max * NET_GROW_MAX)
		a->bw.fast.v = a->bw.slow.v = HO_MAX(a->net_max * NET_GROW_MAX, HO_MIN(a->bw.slow.v, a->p.initial_bw));
	a->net_grow_t = now;
	a->grown = true;
}

/* Book-keeping for the growth back-off at a switch from a->cur to `to`. */
static void grow_account(struct adapt *a, size_t to, uint64_t now)
{
	uint64_t max = a->p.net_grow_after_ns > UINT64_MAX / 64 ? UINT64_MAX : a->p.net_grow_after_ns * 64;

	if (a->grow_switch) {
		a->grow_switch = false;
		if (to == a->grow_from && now - a->grow_switch_t < 4 * a->p.min_dwell_ns)
			a->grow_after = a->grow_after > max / 2 ? max : a->grow_after * 2;   /* it failed */
		else
			a->grow_after = a->p.net_grow_after_ns;
	}
	if (a->grown) {
		a->grow_switch = true;
		a->grow_from = a->cur;
		a->grow_switch_t = now;
	}
}

/* Every mode's prediction, for -vv: processing rate / network rate, in MB/s of input. */
static void debug_predictions(const struct adapt *a)
{
	char line[1024];
	size_t len = 0;

	if (ho_log_get_level() < LOG_DEBUG)
		return;
	for (size_t i = 0; i < a->n && len < sizeof(line) - 64; i++) {
		double p, n;
		predict(a, i, &p, &n);
		len += (size_t)snprintf(line + len, sizeof(line) - len, " %s %.3g/%.3g", a->m[i].name, p / 1e6, n / 1e6);
	}
	ho_debug("predictions (MB/s of data chunks, %.0f %% of the input; processing/network):%s",
	         lit_share(a) * 100, line);
}

/* The ratio history goes on across a switch: the new mode's sums become the old mode's, scaled by
 * the ratio predicted for it (eff_ratio: how the two compared on the same samples), so that its
 * first frames, of one region, weigh what one region weighs (ratio_add). Only from a history of
 * frames seen since the old mode became current (or carried to it), and into a mode compared
 * with it. True when carried. */
static bool carry_ratio(struct adapt *a, size_t to)
{
	struct amode *f = &a->m[a->cur], *t = &a->m[to];
	double k;

	if (to == a->cur || !cur_framed(a) || !f->off.seen || !t->off.seen || !(f->fr.den > 0))
		return false;
	k = eff_ratio(a, to) / f->ratio.v;
	t->fr.num = f->fr.num * k;
	t->fr.den = f->fr.den;
	t->ratio.v = HO_MAX(t->fr.num / t->fr.den, MIN_RATIO);
	t->ratio.t = f->ratio.t;
	t->ratio.seen = true;
	t->lit_t = f->lit_t;
	return true;
}

/* Make `to` current; `prev` is what a switch straight back would count as a flap against. */
static void switch_to(struct adapt *a, size_t to, size_t prev, uint64_t now_ns)
{
	a->carried = carry_ratio(a, to);
	a->switch_pred = HUGE_VAL;       /* (adapt_decide sets what it predicted) */
	a->prev_mode = prev;
	a->cur = to;
	a->switched = true;
	a->last_switch = now_ns;
	a->switches++;
}

size_t adapt_decide(struct adapt *a, uint64_t now_ns)
{
	LOCKED(a);
	size_t best;
	double cb, cc;

	mark_start(a, now_ns);
	net_grow(a, now_ns);
	if (link_unbounded(a))
		a->grown = false;       /* a guess grown before the link was seen draining counts no more */
	if (a->forced >= 0)
		return a->cur = (size_t)a->forced;
	/* while the bandwidth estimate is being inflated, look at every frame: the point is to leave a
	 * CPU-bound mode as soon as a lighter one might pay */
	if (a->evaluated && !a->big_pending && !a->grown && now_ns - a->last_eval < a->p.decide_interval_ns)
		return a->cur;
	/* Nothing measured the link yet: the bandwidth is the initial guess, and a decision on it
	 * (e.g. a light mode picked on a 100 Mbit/s guess, on the first sample's ratios) would run
	 * until the acks tell: on a thin link, for seconds of it. Keep the initial mode until the
	 * link was seen saturated (it is as thin as it carries) or carrying more than the guess
	 * without being saturated (it is fat), or for NET_LEARN_NS (a file: no acks at all). */
	if (!a->first_t_set) {
		a->first_t_set = true;
		a->first_t = now_ns;
	}
	a->learning = !a->sat_seen && !a->fat_seen && now_ns - a->first_t < NET_LEARN_NS;
	if (a->learning)
		return a->cur;
	a->decisions++;
	if (link_unbounded(a)) {
		/* the set's first mode, its cheapest, whatever the predictions: they come from the
		 * first small frames and probes, and one put delta-lz4 at 9.4e8 B/s, held for the
		 * whole dwell at a fifth of that where xor-lz4 ran at twice it */
		if (a->cur != 0) {
			ho_debug("mode '%s' -> '%s': the link was never the bottleneck", a->m[a->cur].name, a->m[0].name);
			switch_to(a, 0, a->n, now_ns);  /* a trial, not a choice: going back is no flap */
		}
		goto out;
	}
	best = best_mode(a, a->bw.slow.v);
	/* an inflated bandwidth estimate is a guess that grows until something lighter wins: try the
	 * next lighter mode predicted to win, not the lightest (whose win would only be as big as the
	 * guess). Not simply the next lighter one: the table's order is by CPU cost, and the mode
	 * next to the current one may be predicted to lose (t4910: from delta-zstd3, xor-zstd1 was
	 * predicted at 18 times delta-zstd3's ratio, from a sample of text found in the base by the
	 * delta modes only, and it held the engine on delta-zstd3 at 1 Gbit/s, where delta-lz4 was
	 * predicted 35 % faster) */
	if (a->grown && best + 1 < a->cur) {
		double cur_rate = predict(a, a->cur, NULL, NULL);
		for (size_t i = a->cur; i-- > best + 1;)
			if (predict(a, i, NULL, NULL) > cur_rate * (1 + a->p.hysteresis)) {
				best = i;
				break;
			}
	}
	if (best != a->cur) {
		cb = predict(a, best, NULL, NULL);
		cc = predict(a, a->cur, NULL, NULL);
		/* between two modes that leave the CPU idle only the ratio counts, and a wrong switch
		 * costs the few per cent it was wrong by: a smaller margin (on a thin link the
		 * stronger mode's gains come in short regions, and a 10 % margin never let it in) */
		bool idle = adapt_cpu_idle(a) && net_bound_idle(a, best, a->bw.slow.v);
		double hyst = a->p.hysteresis * (idle ? IDLE_HYST_MUL : 1.0);
		/* ...and the first decision on the measured link takes the best as it is (a tie's
		 * stronger mode too): the first mode was a guess made before the link was known
		 * (first_mode), not a choice to defend */
		bool first = idle && a->decisions == 1;
		/* the dwell gives way to a big change, and to a lighter mode tried on an inflated
		 * bandwidth estimate (whose failures back off on their own) */
		bool lighter = a->grown && best < a->cur;
		/* on a guess, one step at a time: the next only once the link answered the last one
		 * (a sample taken in at least a quarter of the dwell after it). A sender starved of
		 * CPU reads its acks late, and would otherwise run down to raw before the link's
		 * answer to the first step, a saturated sample, came in. */
		bool wait = lighter && a->grow_switch &&
		            !(a->net_t > a->grow_switch_t && a->net_t - a->grow_switch_t >= a->p.min_dwell_ns / 4);
		/* nor does the dwell hold a mode predicted to lose by more than the big-change factor
		 * (the first estimates come from tiny samples; a wrong start would otherwise last) */
		bool big_gain = cb > cc * (1 + a->p.big_change);
		/* ...except where only the ratio tells the modes apart (idle), unless the current mode
		 * fell that far short of what the switch to it predicted (the switch was wrong): there
		 * one small sample makes another mode's big gain (at 25 Mbit/s 164 KiB on which
		 * xor-zstd1 made a third of delta-zstd3's bytes sent the engine from delta-zstd3 to
		 * xor-zstd1 for the rest of the transfer, the samples after it alike for both), and the
		 * dwell lets the next samples speak */
		if (idle && !first && a->switched && !(cc * (1 + a->p.big_change) < a->switch_pred))
			big_gain = false;
		/* Going straight back to the mode the last switch left means one of the two
		 * predictions was wrong (a probe's sample unlike the frames that followed, say): each
		 * such round trip doubles the dwell before the next, for both the dwell and a
		 * predicted big gain, up to FLAP_MAX doublings; a change of the link or the CPU still
		 * decides at once. A mode kept for FLAP_FORGET dwells more than the stretched
		 * dwell held it clears it (counted from the dwell's start, the counter forgot at the
		 * longest stretch, 16 s, just as that dwell ended, and the flapping began anew). */
		uint64_t forget = (a->p.min_dwell_ns << a->flaps) + FLAP_FORGET * a->p.min_dwell_ns;
		if (a->flaps && a->switched && now_ns - a->last_switch >= forget)
			a->flaps = 0;
		bool back = a->switched && best == a->prev_mode && !a->grow_switch && !a->grown;
		uint64_t dwell = a->p.min_dwell_ns << (back ? a->flaps : 0);
		bool dwelt = !a->switched || now_ns - a->last_switch >= dwell;
		if (back && a->flaps)
			big_gain = big_gain && dwelt;
		if (!wait && (first || cb > cc * (1 + hyst)) &&
		    (a->big_pending || lighter || big_gain || dwelt)) {
			if (back && !lighter && now_ns - a->last_switch < forget)
				a->flaps = HO_MIN(a->flaps + 1, (unsigned)FLAP_MAX);
			ho_debug("mode '%s' -> '%s': predicted %.3g -> %.3g B/s (bw %.3g B/s, cpu %.2f)",
			         a->m[a->cur].name, a->m[best].name, cc, cb, a->bw.slow.v, a->cpu.slow.v);
			debug_predictions(a);
			grow_account(a, best, now_ns);
			switch_to(a, best, a->cur, now_ns);
			a->switch_pred = cb;
		}
	}
out:
	a->evaluated = true;
	a->last_eval = now_ns;
	a->big_pending = false;
	a->ref_bw = a->bw.slow.v;
	a->ref_cpu = a->cpu.slow.v;
	return a->cur;
}

/* CPU ns a probe of mode i costs: its sample (adapt_probe_bytes) with mode i, and with the
 * current mode beside it when i is another one. */
static double probe_cost(const struct adapt *a, size_t i)
{
	double per_byte = 1.0 / a->m[i].speed.v;

	if (i != a->cur)
		per_byte += 1.0 / a->m[a->cur].speed.v;
	/* (the probes' own speeds: what a probe costs, not what the mode would in the pipeline) */
	return (double)adapt_probe_bytes(a, i) * per_byte * NS_PER_S;
}

uint64_t adapt_probe_bytes(const struct adapt *a, size_t idx)
{
	LOCKED(a);
	double per_byte, b;

	if (idx >= a->n)
		return 0;
	per_byte = 1.0 / a->m[idx].speed.v + (idx != a->cur ? 1.0 / a->m[a->cur].speed.v : 0.0);
	b = (double)a->p.probe_time_ns / NS_PER_S / per_byte;
	return (uint64_t)clampd(b, (double)HO_MIN(a->p.probe_bytes, 65536ull), (double)a->p.probe_bytes);
}

/* The modes within probe_span of the current one: lo .. hi. */
static void probe_span(const struct adapt *a, size_t *lo, size_t *hi)
{
	*lo = a->cur > a->p.probe_span ? a->cur - a->p.probe_span : 0;
	*hi = HO_MIN(a->cur + a->p.probe_span, a->n - 1);
}

/* The share of one core the probes may spend: probe_budget; on a link measured as the bottleneck,
 * also up to PROBE_IDLE_SHARE of the time the current mode leaves the CPU idle (the walk would
 * wait on the link meanwhile). */
static double probe_rate(const struct adapt *a)
{
	double p, n;

	if (!link_measured(a))
		return a->p.probe_budget;
	predict(a, a->cur, &p, &n);
	if (!(p > n))
		return a->p.probe_budget;
	return HO_MAX(a->p.probe_budget, PROBE_IDLE_SHARE * (1 - n / p));
}

bool adapt_probe_due(struct adapt *a, uint64_t now_ns, size_t *mode_idx)
{
	LOCKED(a);
	size_t lo, hi, pick = SIZE_MAX;
	double cost = 0, bank = probe_rate(a) * (double)PROBE_BANK_NS;

	if (a->forced >= 0 || a->n < 2)
		return false;
	if (!a->probe_primed) {
		a->probe_primed = true;
		a->probe_t = now_ns;
	}
	if (now_ns > a->probe_t) {
		/* a share of the CPU we get: of one core, less when competing load leaves us less */
		double share = HO_MIN(1.0, a->p.ncores * clampd(a->cpu.slow.v, 0.0, 1.0));
		a->probe_tokens += probe_rate(a) * share * (double)(now_ns - a->probe_t);
		if (a->probe_tokens > bank)
			a->probe_tokens = bank;
		a->probe_t = now_ns;
	}
	if (a->probed_once && now_ns - a->last_probe < a->p.probe_interval_ns)
		return false;
	probe_span(a, &lo, &hi);
	/* the mode whose probe is the most overdue and that the budget can pay for now: never
	 * probed first, then the age of its last probe over its distance from the current mode (the
	 * next lighter and stronger modes, which the next switch goes to, twice as often as those
	 * two places away); ties go to the nearer one, then the lower index. The current mode takes
	 * its turn (as if two places away) once its frames are seen: its probe against its frames
	 * gives its frame/probe correction */
	double best_score = -1;
	for (size_t i = lo; i <= hi; i++) {
		double c, score;
		size_t d = i > a->cur ? i - a->cur : a->cur - i;
		if (i == a->cur && !a->m[i].observed)
			continue;
		c = probe_cost(a, i);
		if (c > a->probe_tokens)
			continue;
		score = !a->m[i].probed ? 1e30 / (double)(d ? d : 2) :
		        (double)(now_ns - a->m[i].t_probe) / (double)(d ? d : 2);
		/* equally overdue: the one predicted faster (the likelier next mode) */
		if (pick != SIZE_MAX && !(score > best_score ||
		                          (score == best_score && predict(a, i, NULL, NULL) > predict(a, pick, NULL, NULL))))
			continue;
		pick = i;
		cost = c;
		best_score = score;
	}
	if (pick == SIZE_MAX)
		return false;
	a->probed_once = true;
	a->last_probe = now_ns;
	if (a->probe_reserved > 0)
		a->probe_reserved = 0;          /* the previous probe never reported: keep its charge */
	a->probe_tokens -= cost;
	a->probe_reserved = cost;
	a->probe_mode = pick;
	*mode_idx = pick;
	return true;
}

size_t adapt_probe_peers(const struct adapt *a, size_t due, size_t *idx, size_t max)
{
	LOCKED(a);
	size_t n = 0, lo, hi;

	if (due >= a->n || max == 0)
		return 0;
	idx[n++] = due;
	if (!adapt_cpu_idle(a))
		return n;
	probe_span(a, &lo, &hi);
	for (size_t i = lo; i <= hi && n < max; i++)
		if (i != due && i != a->cur)
			idx[n++] = i;
	return n;
}

double adapt_mode_speed(const struct adapt *a, size_t idx)
{
	LOCKED(a);
	return idx < a->n ? a->m[idx].speed.v : -1;
}

double adapt_predict(const struct adapt *a, size_t idx, double *proc, double *net)
{
	LOCKED(a);
	if (idx >= a->n)
		return -1;
	return predict(a, idx, proc, net);
}

void adapt_status(const struct adapt *a, struct adapt_status *st)
{
	LOCKED(a);
	double p, n;

	memset(st, 0, sizeof(*st));
	st->mode = a->cur;
	st->mode_name = a->m[a->cur].name;
	/* until the link was seen saturated, the estimate is a guess (initial_bw, or grown): report
	 * what it did carry, so that a sender sizing its unacknowledged window from this (transport.c)
	 * does not push seconds of a thin link's worth in the mode chosen on the guess. A growth
	 * trial's guess sizes the window (the lighter mode must be able to fill a fatter link), but
	 * progress shows the last measured value: 299 Mbit/s on a 100 Mbit/s link was a guess. */
	st->window_Bps = a->sat_seen ? a->bw.slow.v : HO_MIN(a->bw.slow.v, a->net_max);
	st->bandwidth_Bps = a->grown && a->bw_meas > 0 ? HO_MIN(st->window_Bps, a->bw_meas) : st->window_Bps;
	st->bw_model_Bps = a->bw.slow.v;
	/* per byte of input, not of data chunks (adapt_observe_input) */
	double lit = lit_share(a);
	st->ratio = eff_ratio(a, a->cur) * lit;
	st->rate_Bps = predict(a, a->cur, &p, &n) / lit;
	st->proc_Bps = p / lit;
	st->net_bound = n < p;
	st->cpu_avail = a->cpu.slow.v;
	st->bytes_sent = a->bytes_sent;
	st->input_remaining = a->input_remaining;
	st->inflight = a->any_sent && a->sent_cum > a->ack_cum ? a->sent_cum - a->ack_cum : 0;
	if (a->input_remaining == UINT64_MAX) {
		st->eta_s = -1;
	} else {
		/* the input still to process, and what is on its way but not acknowledged yet: once
		 * the encoder is done, that drains at the link's rate */
		st->eta_s = (double)a->input_remaining / st->rate_Bps;
		if (st->inflight && a->bw.slow.v > 0)
			st->eta_s = HO_MAX(st->eta_s, ((double)a->input_remaining * st->ratio + (double)st->inflight) / a->bw.slow.v);
	}
	st->forced = a->forced >= 0;
	st->decisions = a->decisions;
	st->switches = a->switches;
	st->probes = a->probes;
	st->net_measured_s = (double)a->net_ns / NS_PER_S;
	st->learning = a->learning;
	st->backlog = a->any_sent && a->ring[(a->next_seq - 1) % ADAPT_RING].backlog > 0;
	st->elapsed_s = a->start_set && a->progress_t > a->start_t ? (double)(a->progress_t - a->start_t) / NS_PER_S : 0;
}

/* ---- progress lines ------------------------------------------------------------------------ */

static void fmt_bits(double bps, char *buf, size_t len)
{
	if (bps >= 1e9)
		snprintf(buf, len, "%.2f Gbit/s", bps / 1e9);
	else if (bps >= 1e6)
		snprintf(buf, len, "%.1f Mbit/s", bps / 1e6);
	else
		snprintf(buf, len, "%.0f kbit/s", bps / 1e3);
}

static void fmt_eta(double s, char *buf, size_t len)
{
	unsigned long long t;

	if (!(s >= 0) || !isfinite(s) || s > 99.0 * 3600) {
		snprintf(buf, len, "?");
		return;
	}
	t = (unsigned long long)(s + 0.5);
	if (t >= 3600)
		snprintf(buf, len, "%llu:%02llu:%02llu", t / 3600, t / 60 % 60, t % 60);
	else
		snprintf(buf, len, "%llu:%02llu", t / 60, t % 60);
}

/* JSON string body of s (without quotes); mode names are ours, but be safe. */
static void json_escape(const char *s, char *out, size_t len)
{
	size_t o = 0;

	for (; *s && o + 7 < len; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			out[o++] = '\\';
			out[o++] = (char)c;
		} else if (c < 0x20) {
			o += (size_t)snprintf(out + o, len - o, "\\u%04x", c);
		} else {
			out[o++] = (char)c;
		}
	}
	out[o] = 0;
}

int adapt_progress_line(const struct adapt_status *st, int json, char *buf, size_t len)
{
	char a[32], b[32], name[4 * ADAPT_NAME_MAX + 8];
	int r;

	if (!buf || len == 0)
		return HO_ELIMIT;
	if (json) {
		char eta[32];
		json_escape(st->mode_name ? st->mode_name : "", name, sizeof(name));
		if (st->eta_s >= 0 && isfinite(st->eta_s))
			snprintf(eta, sizeof(eta), "%.1f", st->eta_s);
		else
			snprintf(eta, sizeof(eta), "null");
		r = snprintf(buf, len,
		             "{\"mode\":\"%s\",\"bandwidth_bps\":%.0f,\"ratio\":%.4f,\"bytes_sent\":%" PRIu64
		             ",\"bytes_unacked\":%" PRIu64 ",\"eta_s\":%s,\"rate_Bps\":%.0f,\"cpu_avail\":%.3f,\"bottleneck\":\"%s\","
		             "\"switches\":%u,\"forced\":%s,\"elapsed_s\":%.2f}",
		             name, st->bandwidth_Bps * 8, st->ratio, st->bytes_sent, st->inflight, eta, st->rate_Bps,
		             st->cpu_avail, st->net_bound ? "net" : "cpu", st->switches,
		             st->forced ? "true" : "false", st->elapsed_s);
	} else {
		char bw[32], eta[32];
		fmt_bits(st->bandwidth_Bps * 8, bw, sizeof(bw));
		fmt_eta(st->eta_s, eta, sizeof(eta));
		r = snprintf(buf, len, "mode %s%s | %s | ratio %.3f | sent %s | %s/s in | cpu %.0f%% | eta %s",
		             st->mode_name ? st->mode_name : "?", st->forced ? " (forced)" : "", bw, st->ratio,
		             ho_fmt_bytes(st->bytes_sent, a, sizeof(a)),
		             ho_fmt_bytes((uint64_t)st->rate_Bps, b, sizeof(b)), st->cpu_avail * 100, eta);
	}
	if (r < 0 || (size_t)r >= len) {
		buf[0] = 0;
		return HO_ELIMIT;
	}
	return r;
}

/* ---- CPU meter ----------------------------------------------------------------------------- */

/* Total and idle ticks of the CPUs in `mask` (the aggregate "cpu" line when mask is NULL: all of
 * them), and procs_running (runnable threads on the whole machine now, ours included). */
static int read_proc_stat(const cpu_set_t *mask, uint64_t *total, uint64_t *idle, long *running)
{
	char *line = NULL;
	size_t cap = 0;
	FILE *f = fopen("/proc/stat", "re");
	int found = 0;

	if (!f) {
		ho_err("cannot open '/proc/stat': %s", strerror(errno));
		return HO_EIO;
	}
	*running = -1;
	*total = *idle = 0;
	while (getline(&line, &cap, f) > 0) {
		unsigned long long v[8] = { 0 };
		int cpu = -1, n;
		if (!strncmp(line, "procs_running ", 14)) {
			*running = strtol(line + 14, NULL, 10);
			continue;
		}
		if (strncmp(line, "cpu", 3))
			continue;
		if (line[3] == ' ') {
			if (mask)
				continue;
			n = sscanf(line + 3, "%llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
			           &v[3], &v[4], &v[5], &v[6], &v[7]);
		} else {
			if (!mask)
				continue;
			n = sscanf(line + 3, "%d %llu %llu %llu %llu %llu %llu %llu %llu", &cpu, &v[0], &v[1],
			           &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) - 1;
			if (cpu < 0 || cpu >= CPU_SETSIZE || !CPU_ISSET(cpu, mask))
				continue;
		}
		if (n < 4)
			continue;
		/* user nice system idle iowait irq softirq steal (guest time is inside user) */
		for (int i = 0; i < 8; i++)
			*total += v[i];
		*idle += v[3] + v[4];
		found++;
	}
	free(line);
	fclose(f);
	if (!found) {
		ho_err("no 'cpu' line in '/proc/stat'");
		return HO_EIO;
	}
	return 0;
}

/* Threads of this process that are running or runnable now (state R), the caller included. */
static long self_running(void)
{
	char path[64], buf[512], *p;
	long n = 0;
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;

	if (!d)
		return 1;
	while ((e = readdir(d))) {
		FILE *f;
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%.20s/stat", e->d_name);
		if (!(f = fopen(path, "re")))
			continue;
		if (fgets(buf, sizeof(buf), f) && (p = strrchr(buf, ')')) && p[1] == ' ' && p[2] == 'R')
			n++;
		fclose(f);
	}
	closedir(d);
	return n ? n : 1;
}

static uint64_t self_cpu_ns(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) != 0)
		return 0;
	return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * 1000000000ull +
	       ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000ull;
}

double adapt_cpu_fraction(double cpu_ns, double idle_ns, double self_ns, double ncpu, double others_runnable)
{
	double others, free_share, k;

	if (!(cpu_ns > 0) || !(ncpu > 0))
		return 1.0;
	others = clampd(cpu_ns - idle_ns - self_ns, 0.0, cpu_ns);
	free_share = 1.0 - others / cpu_ns;
	/* While the others leave cores idle, what they leave is ours. When they want more than the
	 * machine has, the scheduler still shares: against k busy threads of theirs, ncpu threads of
	 * ours get ncpu / (ncpu + k). Without this, a network-bound export that idles its workers on
	 * a busy box would read "no CPU at all" and flee to the cheapest mode. CPU time alone cannot
	 * tell 2 hogs from 7 on 2 cores: the runnable count can. */
	k = HO_MAX(others / cpu_ns * ncpu, others_runnable);
	return clampd(HO_MAX(free_share, ncpu / (ncpu + k)), 0.0, 1.0);
}

int adapt_cpu_meter_sample(struct adapt_cpu_meter *m, double *available_fraction)
{
	uint64_t total, idle, self = self_cpu_ns();
	double tick_ns, dt, others;
	long hz = sysconf(_SC_CLK_TCK), online = sysconf(_SC_NPROCESSORS_ONLN), running;
	cpu_set_t set;
	int ncpu = allowed_cpus(&set), err;
	/* pinned to some of the CPUs (taskset, a cpuset): only theirs count, and only their load
	 * competes with us */
	bool subset = ncpu > 0 && online > 0 && ncpu < online;

	if (!subset)
		ncpu = online > 0 ? (int)online : 1;
	if ((err = read_proc_stat(subset ? &set : NULL, &total, &idle, &running)))
		return err;
	if (!m->primed || m->ncpu != (unsigned)ncpu) {
		m->total_ticks = total;
		m->idle_ticks = idle;
		m->self_ns = self;
		m->ncpu = (unsigned)ncpu;
		m->primed = true;
		return HO_ESTATE;
	}
	if (total < m->total_ticks + 2)
		return HO_ETRUNC;            /* keep the old sample: the next call measures longer */
	tick_ns = NS_PER_S / (double)(hz > 0 ? hz : 100);
	dt = (double)(total - m->total_ticks) * tick_ns;
	/* procs_running is the whole machine's: on a subset, count the others' share of it */
	others = running > 0 ? (double)HO_MAX(running - self_running(), 0) : 0.0;
	if (subset)
		others = others * ncpu / (double)online;
	*available_fraction = adapt_cpu_fraction(dt, (double)(idle >= m->idle_ticks ? idle - m->idle_ticks : 0) * tick_ns,
	                                         (double)(self >= m->self_ns ? self - m->self_ns : 0),
	                                         (double)ncpu, others);
	m->total_ticks = total;
	m->idle_ticks = idle;
	m->self_ns = self;
	return 0;
}
