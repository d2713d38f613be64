// The status answer of rpc_get_user_match_status -> what the page says. Fields the server
// does not send (older servers) are simply left out of the view.

export type MatchState = "not_opted_in" | "preparing_profile" | "profile_failed" | "waiting"
  | "matched" | "opted_out" | "unknown";

export interface StatusAnswer {
  state?: string;
  opted_in_at?: string | null;
  waiting_since?: string | null;
  missed_cycles?: number | null;
  cycle_id?: string | null;
  room_id?: string | null;
  pool?: string | null;
  updated_at?: string | null;
  last_cycle_id?: string | null;
  unmatched_reason?: string | null;
  reason_code?: string | null;
  message?: string | null;
}

export interface StatusView {
  state: MatchState;
  text: string;
  missedCycles?: number;
  unmatched?: { cycleId: string; reason: string; text: string };
  reason?: string;          // the server's user-safe message (profile failed / delayed)
  matched?: { cycleId: string; groupId: string; at?: string };
  canOptIn: boolean;
  canOptOut: boolean;
}

const KNOWN: readonly MatchState[] = ["not_opted_in", "preparing_profile", "profile_failed",
  "waiting", "matched", "opted_out"];

// matcher/core/model.py UnmatchedReason (+ harness' left_during_cycle), in words.
const UNMATCHED_REASONS: Record<string, string> = {
  no_allowed_partner: "nobody in the pool could be paired with you this time",
  below_min_similarity: "nobody was a close enough match this time",
  odd_one_out: "an odd number of people were waiting",
  partners_taken: "people who had waited longer took the available partners",
  left_during_cycle: "you left the pool during the cycle",
};

export function unmatchedReasonText(code: string): string {
  return UNMATCHED_REASONS[code] ?? "no suitable partner this time";
}

// "2026-12-07T11:00:00Z" -> a short local date/time; the raw text when it does not parse.
export function when(iso: string, format: (d: Date) => string = (d) => d.toLocaleString()): string {
  const ms = Date.parse(iso);
  return Number.isFinite(ms) ? format(new Date(ms)) : iso;
}

function stateOf(answer: StatusAnswer): MatchState {
  return (KNOWN as readonly string[]).includes(answer.state ?? "")
    ? answer.state as MatchState : "unknown";
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

export function describeStatus(answer: StatusAnswer,
  format: (d: Date) => string = (d) => d.toLocaleString()): StatusView {
  const state = stateOf(answer);
  const view: StatusView = { state, text: "", canOptIn: true, canOptOut: false };
  const message = answer.message?.trim() || undefined;
  switch (state) {
    case "not_opted_in":
    case "opted_out":
      view.text = state === "opted_out" ? "You have opted out of matching."
        : "You are not in matching yet. Opt in to be matched in the next cycle.";
      break;
    case "preparing_profile":
      view.text = "Preparing your profile...";
      view.canOptOut = true;
      if (message) view.reason = message;
      break;
    case "profile_failed":
      view.text = "We could not prepare your profile.";
      view.reason = message ?? "Your profile could not be prepared. Please try again later.";
      break;
    case "waiting": {
      const since = answer.waiting_since ?? answer.opted_in_at;
      view.text = since ? `Waiting for a match since ${when(since, format)}.` : "Waiting for a match.";
      view.missedCycles = answer.missed_cycles ?? 0;
      view.canOptOut = true;
      if (answer.last_cycle_id && answer.unmatched_reason) {
        const reason = unmatchedReasonText(answer.unmatched_reason);
        view.unmatched = { cycleId: answer.last_cycle_id, reason: answer.unmatched_reason,
          text: `Not matched in cycle ${answer.last_cycle_id}: ${reason}. `
            + "You keep your place in line." };
      }
      if (message) view.reason = message;
      break;
    }
    case "matched":
      view.text = answer.cycle_id ? `Matched in cycle ${answer.cycle_id}.` : "Matched.";
      view.canOptOut = true;
      if (answer.cycle_id) {
        view.matched = { cycleId: answer.cycle_id, groupId: answer.room_id ?? "",
          ...(answer.updated_at ? { at: answer.updated_at } : {}) };
      }
      break;
    case "unknown":
      view.text = "Checking your status...";
      break;
  }
  view.canOptIn = state === "not_opted_in" || state === "opted_out" || state === "profile_failed"
    || state === "matched" || state === "unknown";
  return view;
}

export function missedText(n: number): string {
  return n === 0 ? "No missed cycles yet." : `${plural(n, "missed cycle")} so far.`;
}
