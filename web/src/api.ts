// The four services through Envoy with gRPC-Web, on the page's own origin.
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { ChatService } from "./gen/parley/chat/v1/chat_pb.js";
import { HistoryService } from "./gen/parley/history/v1/history_pb.js";
import { LedgerService } from "./gen/parley/ledger/v1/ledger_pb.js";
import { SessionService } from "./gen/parley/session/v1/session_pb.js";
import { accessToken, store } from "./auth.js";

const baseUrl = window.location.origin;

/** Sign-in, refresh and public pages: no token. */
const anonymous = createGrpcWebTransport({ baseUrl });
const publicSession = createClient(SessionService, anonymous);
export const publicHistory = createClient(HistoryService, anonymous);

const refresh = async (refreshToken: string) => {
  const reply = await publicSession.refreshToken({ refreshToken });
  if (!reply.credentials) throw new Error("no credentials in RefreshToken's reply");
  return reply.credentials;
};

/** Every other call carries the access token; UNAUTHENTICATED signs the page out. */
const withToken: Interceptor = (next) => async (request) => {
  const token = await accessToken(refresh);
  if (token) request.header.set("authorization", `Bearer ${token}`);
  try {
    return await next(request);
  } catch (error) {
    if (error instanceof ConnectError && error.code === Code.Unauthenticated && token) store(null, null);
    throw error;
  }
};
const signed = createGrpcWebTransport({ baseUrl, interceptors: [withToken] });

export const session = createClient(SessionService, signed);
export { publicSession };
export const history = createClient(HistoryService, signed);
export const chat = createClient(ChatService, signed);
export const ledger = createClient(LedgerService, signed);

/** What a person is told about a failed call. */
export function describe(error: unknown): string {
  if (error instanceof ConnectError) {
    // fetch itself failed, so nothing answered: offline, the edge down, a connection reset.
    if (error.code === Code.Unknown && error.cause instanceof TypeError) {
      return "Parley cannot be reached; check the connection and try again.";
    }
    switch (error.code) {
      case Code.Unavailable:
        return `Parley is unavailable right now; try again in a moment. (${error.rawMessage})`;
      case Code.ResourceExhausted:
        return `Slow down: ${error.rawMessage}`;
      case Code.PermissionDenied:
        return `Not allowed: ${error.rawMessage}`;
      case Code.NotFound:
        return `Not found: ${error.rawMessage}`;
      default:
        return error.rawMessage || Code[error.code];
    }
  }
  return error instanceof Error ? error.message : String(error);
}

export function isCode(error: unknown, code: Code): boolean {
  return error instanceof ConnectError && error.code === code;
}

/** A fresh idempotency key / request id. */
export function newId(): string {
  return crypto.randomUUID();
}
