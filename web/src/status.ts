// Keeps the status answer of rpc_get_user_match_status fresh without a reload: a poll every
// few seconds, plus a refresh right after an action or a match notification. The last answer
// is kept in localStorage so a reload shows it at once (and while matching is unavailable).
import type { StatusAnswer } from "./core/status.ts";
import type { SessionManager } from "./session.ts";

export class StatusPoller {
  private timer: ReturnType<typeof setTimeout> | undefined;
  private stopped = false;
  private inFlight: Promise<void> | null = null;

  private readonly cacheKey: string;

  constructor(private readonly sessions: SessionManager, private readonly everyMs: number,
    private readonly onAnswer: (answer: StatusAnswer) => void,
    private readonly onError: (error: unknown) => Promise<number | undefined>) {
    this.cacheKey = `mosaic.last-status.${sessions.userId}`;
  }

  start(): void {
    const cached = window.localStorage.getItem(this.cacheKey);
    if (cached !== null) {
      try {
        this.onAnswer(JSON.parse(cached) as StatusAnswer);
      } catch {
        window.localStorage.removeItem(this.cacheKey);
      }
    }
    void this.refresh();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  // onError may return how long to wait (rate limited) before the next poll.
  refresh(): Promise<void> {
    if (this.inFlight !== null) return this.inFlight;
    clearTimeout(this.timer);
    this.inFlight = this.fetch().finally(() => { this.inFlight = null; });
    return this.inFlight;
  }

  private async fetch(): Promise<void> {
    let waitMs = this.everyMs;
    try {
      const session = await this.sessions.nakamaSession();
      const answer = await this.sessions.client.rpc(session, "rpc_get_user_match_status", {});
      const status = (answer.payload ?? {}) as StatusAnswer;
      window.localStorage.setItem(this.cacheKey, JSON.stringify(status));
      this.onAnswer(status);
    } catch (error) {
      const retryAfter = await this.onError(error);
      if (retryAfter !== undefined) waitMs = Math.max(waitMs, retryAfter * 1000);
    }
    if (!this.stopped) this.timer = setTimeout(() => void this.refresh(), waitMs);
  }
}
