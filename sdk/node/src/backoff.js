// Exponential backoff with jitter, so a fleet of bots that lost the manager or Redis at the same
// moment does not retry in lockstep.

/** Delays base, 2·base, 4·base … capped at `capS`, each drawn in [d/2, d] ("equal jitter"). */
export class Backoff {
  constructor({ baseS = 0.5, capS = 10 } = {}) {
    this.baseS = baseS;
    this.capS = capS;
    this.attempt = 0;
  }

  nextDelay() {
    const delay = Math.min(this.capS, this.baseS * 2 ** this.attempt);
    this.attempt += 1;
    return delay / 2 + Math.random() * (delay / 2);
  }

  reset() {
    this.attempt = 0;
  }
}

export function sleep(ms, signal = undefined) {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}
