// Every failure the RPCs and the socket can return -> one user-safe message.

export type FailureKind = "rate_limited" | "unavailable" | "session_expired" | "socket_lost"
  | "invalid" | "forbidden" | "other";

// What the adapters know about a failure (see src/nakama_errors.ts).
export interface FailureInfo {
  httpStatus?: number;     // HTTP API answers
  code?: number;           // gRPC code of Nakama's error body or the socket's error
  message?: string;        // Nakama's message (the Lua modules write them for users)
  retryAfterSeconds?: number;
  network?: boolean;       // no answer at all (fetch failed)
  socketLost?: boolean;
}

export interface UserError {
  kind: FailureKind;
  text: string;
  retryAfterSeconds?: number;
}

// gRPC codes Nakama uses (nakama/modules/mosaic_match.lua).
const INVALID = 3, NOT_FOUND = 5, PERMISSION_DENIED = 7, RATE_LIMITED = 8, INTERNAL = 13;
const UNAVAILABLE = 14, UNAUTHENTICATED = 16;

// "too many requests (retry after 2.5 s)" -> 2.5
export function retryAfterFrom(message: string | undefined): number | undefined {
  const found = /retry after ([0-9]+(?:\.[0-9]+)?) ?s/i.exec(message ?? "");
  return found ? Number(found[1]) : undefined;
}

function kindOf(f: FailureInfo): FailureKind {
  if (f.socketLost) return "socket_lost";
  if (f.network) return "unavailable";
  if (f.code === RATE_LIMITED || f.httpStatus === 429) return "rate_limited";
  if (f.code === UNAUTHENTICATED || f.httpStatus === 401) return "session_expired";
  if (f.code === UNAVAILABLE || f.code === INTERNAL || f.httpStatus === 503
    || (f.httpStatus !== undefined && f.httpStatus >= 500)) return "unavailable";
  if (f.code === PERMISSION_DENIED || f.httpStatus === 403) return "forbidden";
  if (f.code === INVALID || f.code === NOT_FOUND || f.httpStatus === 400
    || f.httpStatus === 404) return "invalid";
  return "other";
}

export function userError(f: FailureInfo): UserError {
  const kind = kindOf(f);
  switch (kind) {
    case "rate_limited": {
      const wait = f.retryAfterSeconds ?? retryAfterFrom(f.message);
      const text = wait === undefined ? "Too many requests: please wait a moment and try again."
        : `Too many requests: please try again in ${Math.ceil(wait)} s.`;
      return wait === undefined ? { kind, text } : { kind, text, retryAfterSeconds: wait };
    }
    case "unavailable":
      return { kind, text: "Matching is temporarily unavailable. Please try again shortly." };
    case "session_expired":
      return { kind, text: "Your session has expired. Please sign in again." };
    case "socket_lost":
      return { kind, text: "Connection lost. Reconnecting..." };
    case "forbidden":
      return { kind, text: "That is not allowed." };
    case "invalid":
      // The Lua modules' messages for invalid requests are written for users.
      return { kind, text: f.message ? sentence(f.message) : "That request was not valid." };
    case "other":
      return { kind, text: "Something went wrong. Please try again." };
  }
}

function sentence(message: string): string {
  const trimmed = message.trim().slice(0, 200);
  return trimmed.charAt(0).toUpperCase() + trimmed.slice(1) + (/[.!?]$/.test(trimmed) ? "" : ".");
}
