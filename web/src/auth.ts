// Who is signed in, and their tokens. The access token lives in memory and in localStorage
// with its refresh token, so a reload (or a second tab) stays signed in; tokens are
// refreshed a little before they expire, one refresh at a time across every tab (a refresh
// token is single-use). docs/adr/0018-web-app.md says why localStorage is acceptable here.
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Credentials, User } from "./gen/parley/session/v1/session_pb.js";
import { Role } from "./gen/parley/session/v1/session_pb.js";
import { invalidate } from "./store.js";

const KEY = "parley.credentials";
/** Refresh when the access token has less than this left. */
const LEAD_MS = 30_000;

export interface Tokens {
  accessToken: string;
  accessExpiresMs: number;
  refreshToken: string;
  refreshExpiresMs: number;
  session: string;
}

let tokens: Tokens | null = read();
let user: User | null = null;

function read(): Tokens | null {
  try {
    const raw = window.localStorage.getItem(KEY);
    return raw ? (JSON.parse(raw) as Tokens) : null;
  } catch {
    return null;
  }
}

export function tokensFrom(credentials: Credentials): Tokens {
  return {
    accessToken: credentials.accessToken,
    accessExpiresMs: credentials.accessTokenExpireTime ? timestampMs(credentials.accessTokenExpireTime) : 0,
    refreshToken: credentials.refreshToken,
    refreshExpiresMs: credentials.refreshTokenExpireTime ? timestampMs(credentials.refreshTokenExpireTime) : 0,
    session: credentials.session,
  };
}

export function signedIn(): boolean {
  return tokens !== null;
}

export function currentUser(): User | null {
  return user;
}

export function isAdmin(): boolean {
  return user?.role === Role.ADMIN;
}

export function setUser(next: User | null): void {
  user = next;
  invalidate();
}

export function store(next: Tokens | null, who?: User | null): void {
  tokens = next;
  if (who !== undefined) user = who;
  if (next) window.localStorage.setItem(KEY, JSON.stringify(next));
  else window.localStorage.removeItem(KEY);
  invalidate();
}

/** Another tab signed in, refreshed or signed out: take its tokens. */
window.addEventListener("storage", (event) => {
  if (event.key !== KEY) return;
  tokens = read();
  if (!tokens) user = null;
  invalidate();
});

type Refresher = (refreshToken: string) => Promise<Credentials>;
let inFlight: Promise<string | null> | null = null;

/**
 * The access token to send: refreshed first when it is about to expire. null when signed
 * out, or when the session can no longer be refreshed (the caller is then signed out).
 * Throws the refresh's error when it could not be made and the token has expired.
 */
export async function accessToken(refresh: Refresher): Promise<string | null> {
  if (!tokens) return null;
  if (tokens.accessExpiresMs - Date.now() > LEAD_MS) return tokens.accessToken;
  inFlight ??= refreshOnce(refresh).finally(() => {
    inFlight = null;
  });
  return inFlight;
}

async function refreshOnce(refresh: Refresher): Promise<string | null> {
  const run = async (): Promise<string | null> => {
    // Another tab may have refreshed while this one waited for the lock.
    const latest = read();
    if (!latest) {
      store(null, null);
      return null;
    }
    if (latest.accessExpiresMs - Date.now() > LEAD_MS) {
      tokens = latest;
      return latest.accessToken;
    }
    if (!latest.refreshToken || latest.refreshExpiresMs < Date.now()) {
      store(null, null);
      return null;
    }
    try {
      const next = tokensFrom(await refresh(latest.refreshToken));
      store(next);
      return next.accessToken;
    } catch (error) {
      // Only a refused refresh token ends the session. A refresh that could not be made
      // (offline, the edge's rate limit, a service restarting) keeps it: the access token
      // still works until it expires, and the next call tries again.
      if (error instanceof ConnectError && error.code === Code.Unauthenticated) {
        store(null, null);
        return null;
      }
      if (latest.accessExpiresMs > Date.now()) {
        tokens = latest;
        return latest.accessToken;
      }
      throw error;
    }
  };
  if (navigator.locks) return navigator.locks.request("parley.refresh", run);
  return run();
}
