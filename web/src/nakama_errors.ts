// What nakama-js throws -> FailureInfo for the pure error mapping (core/errors.ts).
import type { FailureInfo } from "./core/errors.ts";

export async function failureInfo(error: unknown): Promise<FailureInfo> {
  if (typeof Response !== "undefined" && error instanceof Response) {
    // nakama-js throws the fetch Response of a non-2xx answer: {code, message, error}.
    const info: FailureInfo = { httpStatus: error.status };
    const retry = Number(error.headers.get("Retry-After"));
    if (Number.isFinite(retry) && retry > 0) info.retryAfterSeconds = retry;
    try {
      const body = (await error.json()) as { code?: number; message?: string };
      if (typeof body.code === "number") info.code = body.code;
      if (typeof body.message === "string") info.message = body.message;
    } catch {
      // no JSON body: the status says enough
    }
    return info;
  }
  if (error instanceof TypeError) {
    return { network: true }; // fetch could not reach the server
  }
  if (typeof error === "object" && error !== null && "code" in error) {
    const e = error as { code?: unknown; message?: unknown }; // a socket error (rtapi.Error)
    return { ...(typeof e.code === "number" ? { code: e.code } : {}),
      ...(typeof e.message === "string" ? { message: e.message } : {}) };
  }
  return {};
}
