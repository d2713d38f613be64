// Which match notifications this browser has already shown: one per (cycle id, partner),
// kept in localStorage so a reconnect or a reload never shows the same match twice.

export interface KeyValueStore {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

export const MATCH_NOTIFICATION_CODE = 101; // nakama/modules/mosaic_rooms.lua NOTIFY_CODE
const MAX_REMEMBERED = 200;

export interface MatchNotice {
  cycleId: string;
  partnerId: string;
  partnerName: string;
  groupId: string;
  createdMs: number;
}

// A stored notification older than this is not news when a new browser first reads the list.
export const CATCH_UP_MAX_AGE_MS = 24 * 3600 * 1000;

export function recentEnough(notice: MatchNotice, nowMs: number,
  maxAgeMs: number = CATCH_UP_MAX_AGE_MS): boolean {
  return notice.createdMs > 0 && nowMs - notice.createdMs <= maxAgeMs;
}

export function matchKey(cycleId: string, partnerId: string): string {
  return `${cycleId}\n${partnerId}`;
}

function text(value: unknown): string {
  return typeof value === "string" ? value : "";
}

// A Nakama notification -> the match it announces, or null when it is not one.
export function matchNotice(n: { code?: number; content?: unknown; create_time?: string }):
    MatchNotice | null {
  if (n.code !== MATCH_NOTIFICATION_CODE || typeof n.content !== "object" || n.content === null) {
    return null;
  }
  const c = n.content as Record<string, unknown>;
  const cycleId = text(c.cycle_id);
  const partnerId = text(c.partner_user_id);
  if (!cycleId || !partnerId) {
    return null;
  }
  const created = Date.parse(n.create_time ?? "");
  return {
    cycleId, partnerId, groupId: text(c.group_id),
    partnerName: text(c.partner_display_name) || text(c.partner_username) || "your match",
    createdMs: Number.isFinite(created) ? created : 0,
  };
}

export class SeenMatches {
  private readonly storageKey: string;

  // One list per signed-in user: two users sharing a browser do not hide each other's matches.
  constructor(private readonly store: KeyValueStore, userId: string) {
    this.storageKey = `mosaic.seen-matches.${userId}`;
  }

  private load(): string[] {
    try {
      const parsed: unknown = JSON.parse(this.store.getItem(this.storageKey) ?? "[]");
      return Array.isArray(parsed) ? parsed.filter((k): k is string => typeof k === "string") : [];
    } catch {
      return []; // a corrupt entry must not stop notifications
    }
  }

  // True the first time a match is offered (and remembers it); false for every repeat.
  firstTime(notice: MatchNotice): boolean {
    const key = matchKey(notice.cycleId, notice.partnerId);
    const seen = this.load();
    if (seen.includes(key)) {
      return false;
    }
    seen.push(key);
    this.store.setItem(this.storageKey, JSON.stringify(seen.slice(-MAX_REMEMBERED)));
    return true;
  }
}
