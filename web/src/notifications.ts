// Match notifications: shown as they arrive on the socket, once per (cycle id, partner)
// across reconnects and reloads (core/dedup.ts). After a (re)connect the stored list is read
// once, for a notification sent while the socket was down ("catch-up"; the last day only).
import type { Notification } from "@heroiclabs/nakama-js";
import { matchNotice, recentEnough, SeenMatches, type MatchNotice } from "./core/dedup.ts";
import type { SessionManager } from "./session.ts";

export type NoticeSource = "socket" | "catch-up";

export class MatchNotifications {
  private readonly seen: SeenMatches;

  constructor(private readonly sessions: SessionManager,
    private readonly show: (notice: MatchNotice, source: NoticeSource) => void) {
    this.seen = new SeenMatches(window.localStorage, sessions.userId);
  }

  received(n: Notification, source: NoticeSource = "socket"): boolean {
    const notice = matchNotice(n);
    if (notice === null) return false;
    if (source === "catch-up" && !recentEnough(notice, Date.now())) return false;
    if (!this.seen.firstTime(notice)) return false;
    this.show(notice, source);
    return true;
  }

  async catchUp(): Promise<void> {
    const session = await this.sessions.nakamaSession();
    const list = await this.sessions.client.listNotifications(session, 100);
    const recent = (list.notifications ?? []).slice().sort(
      (a, b) => Date.parse(a.create_time ?? "") - Date.parse(b.create_time ?? ""));
    for (const n of recent) {
      const content = typeof n.content === "string" ? JSON.parse(n.content) as unknown : n.content;
      this.received({ ...n, content: content as object }, "catch-up");
    }
  }
}

// An optional short tone (Web Audio; no file to load), switched on by the user.
export function playChime(): void {
  const Ctx = window.AudioContext;
  if (Ctx === undefined) return;
  const ctx = new Ctx();
  const osc = ctx.createOscillator();
  const gain = ctx.createGain();
  osc.frequency.value = 880;
  gain.gain.setValueAtTime(0.15, ctx.currentTime);
  gain.gain.exponentialRampToValueAtTime(0.001, ctx.currentTime + 0.4);
  osc.connect(gain).connect(ctx.destination);
  osc.start();
  osc.stop(ctx.currentTime + 0.4);
  osc.onended = () => void ctx.close();
}
