/* Shadow pacing: spreads mirror starts evenly over time once the mirror is
 * slow enough for shadow_defaults.max_in_flight to bind.
 *
 * Without it, a mirror that answers in 500 ms fills the budget in the first
 * few milliseconds, the whole budget completes together 500 ms later, and the
 * next requests refill it together again: every cycle the worker does two
 * budgets' worth of mirror work in one burst, and the primaries caught in it
 * wait (bench: p99 1.3-1.5x of shadowing off with a 256 budget, 1.7x with
 * 1024, 0.99x with 32). A token bucket refilled at budget / mean mirror time
 * (Little's law: the most starts the budget can sustain) takes the same
 * number of mirrors, one at a time. The bucket holds a whole budget, so after
 * a quiet spell a burst of traffic is mirrored as far as the budget allows;
 * under sustained load it stays near empty and starts come one by one.
 *
 * Before the first mirror exchange has ended the mean is unknown: the pacer
 * presumes the worst (the shadow timeout) and starts with a few tokens, so a
 * mirror that is slow or dead from the start is not sent a whole budget at
 * once (a connection each, in one burst); a fast one ends its first exchange
 * within a millisecond and from then on is never held back.
 *
 * Pure (no clock, no libevent): the caller passes the time. */
#ifndef SP_PACER_H
#define SP_PACER_H

/* Tokens to start with, before any mirror exchange has ended. */
#define SP_PACER_START_TOKENS 8

struct sp_pacer {
	double mean_ms;  /* moving mean of mirror exchange times; 0: none seen yet */
	double tokens;
	double last_ms;  /* when tokens were last topped up; <0: never */
};

void sp_pacer_init(struct sp_pacer *p);
/* 1: start a mirror now (takes a token); 0: skip it. budget: the mirrors this
 * worker may have in flight; presumed_ms: the mean to assume until an
 * exchange has ended (the shadow timeout). */
int sp_pacer_admit(struct sp_pacer *p, double now_ms, int budget, double presumed_ms);
/* A mirror exchange ended (answered, failed or timed out) after ms. */
void sp_pacer_done(struct sp_pacer *p, double ms);

#endif
