// The state machine of an action button (opt in, opt out, block).

export type ButtonState = "idle" | "processing" | "success" | "error";
export type ButtonEvent = "press" | "succeed" | "fail" | "reset";

// A press while processing is ignored: a double tap sends one request.
export function nextButtonState(state: ButtonState, event: ButtonEvent): ButtonState {
  switch (event) {
    case "press":
      return state === "processing" ? state : "processing";
    case "succeed":
      return state === "processing" ? "success" : state;
    case "fail":
      return state === "processing" ? "error" : state;
    case "reset":
      return state === "processing" ? state : "idle";
  }
}

export function canPress(state: ButtonState): boolean {
  return state !== "processing";
}
