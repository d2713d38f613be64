// The buttons' RPCs: opt in, opt out, block. Each button follows core/buttons.ts.
import { nextButtonState, type ButtonEvent, type ButtonState } from "./core/buttons.ts";
import type { SessionManager } from "./session.ts";

export class ActionButton {
  state: ButtonState = "idle";

  constructor(readonly element: HTMLButtonElement) {
    this.apply("reset");
  }

  apply(event: ButtonEvent): void {
    this.state = nextButtonState(this.state, event);
    this.element.dataset.state = this.state;
    this.element.setAttribute("aria-busy", String(this.state === "processing"));
  }

  // Runs ``work`` once per press (a press while processing does nothing).
  async run(work: () => Promise<void>): Promise<boolean> {
    if (this.state === "processing") return false;
    this.apply("press");
    try {
      await work();
      this.apply("succeed");
      return true;
    } catch (error) {
      this.apply("fail");
      throw error;
    }
  }
}

// A request id per press: the ingress de-duplicates a retried request by it.
function requestId(): string {
  return crypto.randomUUID().replace(/-/g, "");
}

export async function callRpc(sessions: SessionManager, id: string,
  payload: Record<string, unknown>): Promise<unknown> {
  const session = await sessions.nakamaSession();
  const answer = await sessions.client.rpc(session, id, { ...payload, request_id: requestId() });
  return answer.payload;
}

export const optIn = (s: SessionManager) => callRpc(s, "rpc_opt_in_match", {});
export const optOut = (s: SessionManager) => callRpc(s, "rpc_opt_out_match", {});
export const block = (s: SessionManager, partnerUserId: string) =>
  callRpc(s, "rpc_block_user", { user_id: partnerUserId });
