// Wires the modules to the page: sign-in, socket, status, notifications, chat, buttons.
import type { Socket } from "@heroiclabs/nakama-js";
import { ActionButton, block, optIn, optOut } from "./actions.ts";
import { Chat } from "./chat.ts";
import { loadConfig, type ClientConfig } from "./config.ts";
import { userError, type UserError } from "./core/errors.ts";
import { describeStatus, type StatusAnswer } from "./core/status.ts";
import { failureInfo } from "./nakama_errors.ts";
import { MatchNotifications, playChime } from "./notifications.ts";
import { SessionExpired, SessionManager } from "./session.ts";
import { LiveSocket } from "./socket.ts";
import { StatusPoller } from "./status.ts";
import { addNotice, showChat, showError, showPhase, showSocket, showStatus, ui } from "./view.ts";

const SOUND_KEY = "mosaic.sound";

class App {
  private live: LiveSocket | null = null;
  private poller: StatusPoller | null = null;
  private notices: MatchNotifications | null = null;
  private chat: Chat | null = null;
  private groupId = "";
  private partnerId = "";
  private lastState = "";
  private readonly optin = new ActionButton(ui.optin);
  private readonly optout = new ActionButton(ui.optout);
  private readonly blockButton = new ActionButton(ui.block);

  constructor(private readonly config: ClientConfig, private readonly sessions: SessionManager) {}

  async boot(): Promise<void> {
    this.bindControls();
    showPhase("signing-in");
    try {
      if (await this.sessions.start()) this.ready();
      else showPhase("signed-out");
    } catch (error) {
      await this.report(error);
      if (ui.app.dataset.phase === "signing-in") showPhase("signed-out");
    }
  }

  private ready(): void {
    showPhase("ready", this.sessions.sub, this.sessions.userId);
    this.notices = new MatchNotifications(this.sessions, (notice, source) => {
      addNotice(notice, source, () => ui.statusView.focus());
      if (ui.sound.checked) playChime();
    });
    this.live = new LiveSocket(this.sessions, {
      state: (state, retryInMs) => showSocket(state, retryInMs),
      connected: (socket, reconnect) => void this.connected(socket, reconnect),
      notification: (n) => {
        if (this.notices?.received(n, "socket")) void this.poller?.refresh();
      },
      channelMessage: (m) => this.chat?.received(m),
      fatal: (error) => void this.report(error),
    });
    this.live.start();
    this.poller = new StatusPoller(this.sessions, this.config.statusPollSeconds * 1000,
      (answer) => void this.status(answer), (error) => this.statusFailed(error));
    this.poller.start();
  }

  private async connected(socket: Socket, reconnect: boolean): Promise<void> {
    if (ui.errorBanner.dataset.kind === "socket_lost") showError(null);
    try {
      await this.notices?.catchUp();
      if (reconnect && this.chat !== null) await this.chat.join(socket);
    } catch (error) {
      await this.report(error);
    }
  }

  private async status(answer: StatusAnswer): Promise<void> {
    const kind = ui.errorBanner.dataset.kind;
    if (kind === "unavailable" || kind === "rate_limited") showError(null);
    const view = describeStatus(answer);
    showStatus(view);
    // An action's "done" line describes the state it led to: once a match (or any later
    // state the server decided) replaces that state, the line would contradict the status.
    if (view.state !== this.lastState && view.state === "matched") ui.actionMessage.textContent = "";
    this.lastState = view.state;
    const groupId = view.matched?.groupId ?? "";
    if (groupId === this.groupId) return;
    this.groupId = groupId;
    this.partnerId = "";
    this.chat = null;
    ui.chatView.hidden = true;
    this.blockButton.apply("reset");
    ui.block.textContent = "Block";
    ui.block.disabled = false;
    if (groupId) await this.loadPartner(groupId);
  }

  private async loadPartner(groupId: string): Promise<void> {
    try {
      const session = await this.sessions.nakamaSession();
      const members = await this.sessions.client.listGroupUsers(session, groupId);
      const partner = (members.group_users ?? []).map((g) => g.user)
        .find((u) => u?.id !== undefined && u.id !== this.sessions.userId);
      this.partnerId = partner?.id ?? "";
      ui.partnerName.textContent = partner?.display_name || partner?.username || "your match";
    } catch (error) {
      await this.report(error);
    }
  }

  private async statusFailed(error: unknown): Promise<number | undefined> {
    const shown = await this.report(error);
    return shown?.retryAfterSeconds;
  }

  // Shows a failure; a session that cannot be renewed ends in the signed-out page.
  private async report(error: unknown): Promise<UserError | null> {
    if (error instanceof SessionExpired) {
      this.stop();
      showPhase("signed-out");
      const shown = userError({ code: 16 });
      showError(shown);
      return shown;
    }
    const shown = userError(await failureInfo(error));
    showError(shown);
    if (shown.kind === "session_expired") this.stop();
    return shown;
  }

  private stop(): void {
    this.live?.stop();
    this.poller?.stop();
    this.live = null;
    this.poller = null;
  }

  private async act(button: ActionButton, work: () => Promise<unknown>, done: string): Promise<void> {
    try {
      if (await button.run(async () => { await work(); })) {
        ui.actionMessage.textContent = done;
        await this.poller?.refresh();
      }
    } catch (error) {
      const shown = await this.report(error);
      ui.actionMessage.textContent = shown?.text ?? "";
    }
  }

  private async openChat(): Promise<void> {
    const socket = this.live?.current;
    if (!this.groupId || socket == null) return;
    const chat = new Chat(this.sessions, this.groupId, (lines) => showChat(lines, this.sessions.userId));
    this.chat = chat;
    ui.chatView.hidden = false;
    ui.chatView.dataset.state = "joining";
    try {
      await chat.join(socket);
      ui.chatView.dataset.channelId = chat.channelId;
      ui.chatView.dataset.state = "joined";
      ui.chatInput.focus();
    } catch (error) {
      ui.chatView.dataset.state = "error";
      await this.report(error);
    }
  }

  private async send(): Promise<void> {
    const text = ui.chatInput.value.trim();
    const socket = this.live?.current;
    if (!text || this.chat === null || socket == null) return;
    try {
      await this.chat.send(socket, text);
      ui.chatInput.value = "";
    } catch (error) {
      await this.report(error);
    }
  }

  private bindControls(): void {
    ui.signin.addEventListener("click", () => void this.sessions.signIn());
    ui.signout.addEventListener("click", () => void this.sessions.signOut().then(() => {
      this.stop();
      showPhase("signed-out");
    }));
    ui.optin.addEventListener("click", () => void this.act(this.optin,
      () => optIn(this.sessions), "You are in: we will look for a match in the next cycle."));
    ui.optout.addEventListener("click", () => void this.act(this.optout,
      () => optOut(this.sessions), "You have opted out."));
    ui.block.addEventListener("click", () => void this.act(this.blockButton,
      () => block(this.sessions, this.partnerId),
      "Blocked: you will not be matched with them again.").then(() => {
      if (this.blockButton.state === "success") {
        ui.block.textContent = "Blocked";
        ui.block.disabled = true;
      }
    }));
    ui.chatOpen.addEventListener("click", () => void this.openChat());
    ui.chatForm.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.send();
    });
    ui.sound.checked = window.localStorage.getItem(SOUND_KEY) === "on";
    ui.sound.addEventListener("change", () =>
      window.localStorage.setItem(SOUND_KEY, ui.sound.checked ? "on" : "off"));
  }

  dropSocket(): void { this.live?.drop(); }
}

async function main(): Promise<void> {
  let config: ClientConfig;
  try {
    config = await loadConfig();
  } catch {
    showPhase("error");
    showError({ kind: "other", text: "The page could not load its configuration." });
    return;
  }
  const app = new App(config, new SessionManager(config));
  (window as unknown as { mosaicClient: unknown }).mosaicClient = {
    dropSocket: () => app.dropSocket(),
  };
  await app.boot();
}

void main();
