// Reconnect delays: exponential with full jitter, capped.

export interface BackoffPolicy {
  baseMs: number;
  maxMs: number;
}

export const SOCKET_BACKOFF: BackoffPolicy = { baseMs: 500, maxMs: 15_000 };

// attempt 0 is the first retry; random() in [0, 1).
export function backoffDelayMs(attempt: number, policy: BackoffPolicy = SOCKET_BACKOFF,
  random: () => number = Math.random): number {
  const ceiling = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.max(0, Math.min(attempt, 30)));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}
