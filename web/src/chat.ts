// The pair's chat: join the match room's group channel, history through
// listChannelMessages (so a reload shows it), send and receive on the socket.
import type { ChannelMessage, Socket } from "@heroiclabs/nakama-js";
import { chatLine, mergeLines, type ChatLine } from "./core/chatlog.ts";
import type { SessionManager } from "./session.ts";

const GROUP_CHANNEL = 3; // rtapi ChannelJoin.Type GROUP
const HISTORY = 100;

export class Chat {
  private lines: ChatLine[] = [];
  channelId = "";

  constructor(private readonly sessions: SessionManager, readonly groupId: string,
    private readonly render: (lines: readonly ChatLine[]) => void) {}

  async join(socket: Socket): Promise<void> {
    const channel = await socket.joinChat(this.groupId, GROUP_CHANNEL, true, false);
    this.channelId = channel.id;
    const session = await this.sessions.nakamaSession();
    const history = await this.sessions.client.listChannelMessages(session, channel.id,
      HISTORY, false);
    const lines = (history.messages ?? []).map((m) => chatLine(m))
      .filter((l): l is ChatLine => l !== null);
    this.update(lines);
  }

  received(m: ChannelMessage): void {
    if (m.channel_id !== this.channelId) return;
    const line = chatLine(m);
    if (line !== null) this.update([line]);
  }

  async send(socket: Socket, text: string): Promise<void> {
    await socket.writeChatMessage(this.channelId, { text });
  }

  private update(incoming: ChatLine[]): void {
    this.lines = mergeLines(this.lines, incoming);
    this.render(this.lines);
  }
}
