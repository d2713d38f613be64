// The page's elements (static/index.html) and how each piece of state is drawn on them.
import type { ChatLine } from "./core/chatlog.ts";
import type { MatchNotice } from "./core/dedup.ts";
import type { UserError } from "./core/errors.ts";
import { missedText, when, type StatusView } from "./core/status.ts";
import type { SocketState } from "./socket.ts";

function el<T extends HTMLElement = HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (found === null) throw new Error(`index.html has no #${id}`);
  return found as T;
}

export const ui = {
  app: el("app"), whoami: el("whoami"), signin: el<HTMLButtonElement>("signin"),
  signout: el<HTMLButtonElement>("signout"), socketBanner: el("socket-banner"),
  errorBanner: el("error-banner"), signedOut: el("signed-out"), signedIn: el("signed-in"),
  notifications: el("notifications"), statusView: el("status-view"), statusText: el("status-text"),
  statusMissed: el("status-missed"), statusUnmatched: el("status-unmatched"),
  statusReason: el("status-reason"), optin: el<HTMLButtonElement>("optin"),
  optout: el<HTMLButtonElement>("optout"), actionMessage: el("action-message"),
  sound: el<HTMLInputElement>("sound-toggle"), matchView: el("match-view"),
  partnerName: el("match-partner-name"), matchTime: el<HTMLTimeElement>("match-time"),
  chatOpen: el<HTMLButtonElement>("chat-open"), block: el<HTMLButtonElement>("block"),
  chatView: el("chat-view"), chatMessages: el("chat-messages"), chatForm: el<HTMLFormElement>("chat-form"),
  chatInput: el<HTMLInputElement>("chat-input"),
};

export type Phase = "signed-out" | "signing-in" | "ready" | "error";

export function showPhase(phase: Phase, sub = "", userId = ""): void {
  ui.app.dataset.phase = phase;
  const signedIn = phase === "ready";
  ui.signedIn.hidden = !signedIn;
  ui.signedOut.hidden = phase !== "signed-out";
  ui.signin.hidden = phase !== "signed-out";
  ui.signout.hidden = !signedIn;
  ui.whoami.hidden = !signedIn;
  ui.whoami.textContent = sub ? `Signed in as ${sub}` : "";
  ui.whoami.dataset.userId = userId;
}

export function showError(error: UserError | null): void {
  ui.errorBanner.hidden = error === null;
  ui.errorBanner.textContent = error?.text ?? "";
  if (error === null) delete ui.errorBanner.dataset.kind;
  else ui.errorBanner.dataset.kind = error.kind;
}

export function showSocket(state: SocketState, retryInMs?: number): void {
  ui.socketBanner.dataset.state = state;
  ui.socketBanner.hidden = state === "connected";
  ui.socketBanner.textContent = state === "reconnecting"
    ? `Connection lost. Reconnecting in ${Math.max(1, Math.round((retryInMs ?? 0) / 1000))} s...`
    : state === "connecting" ? "Connecting..." : "";
}

function line(target: HTMLElement, text: string | undefined): void {
  target.hidden = !text;
  target.textContent = text ?? "";
}

export function showStatus(view: StatusView): void {
  ui.statusView.dataset.state = view.state;
  ui.statusText.textContent = view.text;
  line(ui.statusMissed, view.missedCycles === undefined ? undefined : missedText(view.missedCycles));
  ui.statusMissed.dataset.count = String(view.missedCycles ?? 0);
  line(ui.statusUnmatched, view.unmatched?.text);
  ui.statusUnmatched.dataset.cycleId = view.unmatched?.cycleId ?? "";
  ui.statusUnmatched.dataset.reason = view.unmatched?.reason ?? "";
  line(ui.statusReason, view.reason);
  ui.optin.disabled = !view.canOptIn && ui.optin.dataset.state !== "processing";
  ui.optout.disabled = !view.canOptOut && ui.optout.dataset.state !== "processing";
  ui.matchView.hidden = view.matched === undefined;
  if (view.matched !== undefined) {
    ui.matchView.dataset.cycleId = view.matched.cycleId;
    ui.matchView.dataset.groupId = view.matched.groupId;
    ui.matchTime.textContent = view.matched.at ? when(view.matched.at) : "this cycle";
    ui.matchTime.dateTime = view.matched.at ?? "";
  }
}

export function addNotice(notice: MatchNotice, source: string, onDismiss: () => void): void {
  const box = document.createElement("div");
  box.className = "notice";
  box.dataset.testid = "match-notification";
  box.dataset.cycleId = notice.cycleId;
  box.dataset.partnerId = notice.partnerId;
  box.dataset.source = source;
  box.dataset.createdMs = String(notice.createdMs);
  box.dataset.shownMs = String(Date.now());
  const text = document.createElement("span");
  text.textContent = `You have a new match: ${notice.partnerName}!`;
  const close = document.createElement("button");
  close.type = "button";
  close.dataset.testid = "notification-dismiss";
  close.textContent = "Dismiss";
  close.setAttribute("aria-label", "Dismiss the match notification");
  close.addEventListener("click", () => { box.remove(); onDismiss(); });
  box.append(text, close);
  ui.notifications.append(box);
}

export function showChat(lines: readonly ChatLine[], myUserId: string): void {
  const items = lines.map((l) => {
    const li = document.createElement("li");
    li.dataset.testid = "chat-message";
    li.dataset.messageId = l.id;
    li.dataset.sender = l.senderId === myUserId ? "me" : "partner";
    const bubble = document.createElement("span");
    bubble.textContent = l.text;
    bubble.title = `${l.senderName} ${new Date(l.createdMs).toLocaleTimeString()}`;
    li.append(bubble);
    return li;
  });
  ui.chatMessages.replaceChildren(...items);
  ui.chatMessages.scrollTop = ui.chatMessages.scrollHeight;
}
