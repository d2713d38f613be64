// The realtime socket: connect, and on any loss reconnect with backoff while the page shows
// a banner. Listeners are re-attached to every new socket.
import type { Notification, Socket } from "@heroiclabs/nakama-js";
import type { ChannelMessage } from "@heroiclabs/nakama-js";
import { backoffDelayMs } from "./core/backoff.ts";
import { SessionExpired, type SessionManager } from "./session.ts";

export type SocketState = "connecting" | "connected" | "reconnecting";

export interface SocketEvents {
  state(state: SocketState, retryInMs?: number): void;
  connected(socket: Socket, reconnect: boolean): void; // (re)join channels, catch up
  notification(n: Notification): void;
  channelMessage(m: ChannelMessage): void;
  fatal(error: unknown): void; // the session cannot be renewed
}

export class LiveSocket {
  private socket: Socket | null = null;
  private attempt = 0;
  private everConnected = false;
  private stopped = false;
  private generation = 0; // one per connection attempt; a late event of an old one is ignored
  private lostGeneration = -1;
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor(private readonly sessions: SessionManager, private readonly on: SocketEvents) {}

  get current(): Socket | null { return this.socket; }

  start(): void {
    this.on.state("connecting");
    void this.connect();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.socket?.disconnect(false);
    this.socket = null;
  }

  // For tests: drop the connection as a network loss would.
  drop(): void {
    this.socket?.disconnect(true);
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    const gen = ++this.generation;
    const socket = this.sessions.client.createSocket(this.sessions.client.useSSL, false);
    socket.onnotification = (n) => this.on.notification(n);
    socket.onchannelmessage = (m) => this.on.channelMessage(m);
    socket.ondisconnect = () => this.lost(gen);
    try {
      const session = await this.sessions.nakamaSession();
      await socket.connect(session, true);
    } catch (error) {
      if (error instanceof SessionExpired) {
        this.on.fatal(error);
        return;
      }
      this.lost(gen);
      return;
    }
    if (gen !== this.generation || this.lostGeneration === gen) return;
    this.socket = socket;
    const reconnect = this.everConnected;
    this.everConnected = true;
    this.attempt = 0;
    this.on.state("connected");
    this.on.connected(socket, reconnect);
  }

  private lost(gen: number): void {
    if (this.stopped || gen !== this.generation || this.lostGeneration === gen) return;
    this.lostGeneration = gen;
    this.socket = null;
    clearTimeout(this.timer);
    const delay = backoffDelayMs(this.attempt++);
    this.on.state("reconnecting", delay);
    this.timer = setTimeout(() => void this.connect(), delay);
  }
}
