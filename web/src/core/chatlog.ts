// The chat's message list: history and live messages merged, each message once, in order.

export interface ChatLine {
  id: string;
  senderId: string;
  senderName: string;
  text: string;
  createdMs: number;
}

export function mergeLines(current: readonly ChatLine[], incoming: readonly ChatLine[]): ChatLine[] {
  const byId = new Map<string, ChatLine>();
  for (const line of [...current, ...incoming]) {
    byId.set(line.id, line);
  }
  return [...byId.values()].sort((a, b) => a.createdMs - b.createdMs || a.id.localeCompare(b.id));
}

// A Nakama channel message -> a line; content is {"text": "..."} as this client writes it.
export function chatLine(m: { message_id?: string; sender_id?: string; username?: string;
  content?: unknown; create_time?: string }): ChatLine | null {
  const content = typeof m.content === "string" ? safeJson(m.content) : m.content;
  const text = typeof content === "object" && content !== null
    ? (content as Record<string, unknown>).text : undefined;
  if (!m.message_id || typeof text !== "string") {
    return null;
  }
  const created = Date.parse(m.create_time ?? "");
  return { id: m.message_id, senderId: m.sender_id ?? "", senderName: m.username ?? "",
    text, createdMs: Number.isFinite(created) ? created : Date.now() };
}

function safeJson(raw: string): unknown {
  try {
    return JSON.parse(raw);
  } catch {
    return undefined;
  }
}
