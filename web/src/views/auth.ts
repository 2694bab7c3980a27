// Sign up, sign in, forgotten password, password reset and email verification.
import { html, type TemplateResult } from "lit-html";
import { describe, publicSession, session } from "../api.js";
import { store, tokensFrom } from "../auth.js";
import { navigate, type Location } from "../router.js";
import { invalidate } from "../store.js";
import { errorLine, fields } from "./page.js";

let error: string | null = null;
let notice: string | null = null;
let busy = false;

async function attempt(action: () => Promise<void>): Promise<void> {
  busy = true;
  error = null;
  notice = null;
  invalidate();
  try {
    await action();
  } catch (failure) {
    error = describe(failure);
  } finally {
    busy = false;
    invalidate();
  }
}

function leave(to: string): void {
  error = null;
  notice = null;
  navigate(to, { replace: true });
}

async function signUp(event: Event): Promise<void> {
  const { email = "", password = "", displayName = "" } = fields(event);
  await attempt(async () => {
    const reply = await publicSession.register({ email, password, displayName });
    if (!reply.credentials) throw new Error("Register returned no credentials");
    store(tokensFrom(reply.credentials), reply.user ?? null);
    leave("/");
  });
}

async function signIn(event: Event): Promise<void> {
  const { email = "", password = "" } = fields(event);
  await attempt(async () => {
    const reply = await publicSession.login({
      credential: { case: "password", value: { email, password } },
      userAgent: navigator.userAgent.slice(0, 200),
    });
    if (!reply.credentials) throw new Error("Login returned no credentials");
    store(tokensFrom(reply.credentials), reply.user ?? null);
    const next = new URLSearchParams(window.location.search).get("next");
    leave(next && next.startsWith("/") && !next.startsWith("//") ? next : "/");
  });
}

async function requestReset(event: Event): Promise<void> {
  const { email = "" } = fields(event);
  await attempt(async () => {
    await publicSession.requestPasswordReset({ email });
    notice = "If an account has this address, a reset link is on its way.";
  });
}

async function reset(event: Event, token: string): Promise<void> {
  const { password = "" } = fields(event);
  await attempt(async () => {
    await publicSession.resetPassword({ resetToken: token, newPassword: password });
    notice = "Your password is set. Sign in with it.";
    navigate("/signin", { replace: true });
  });
}

let verified: string | null = null;
async function verify(token: string): Promise<void> {
  if (verified === token) return;
  verified = token;
  await attempt(async () => {
    await publicSession.verifyEmail({ verificationToken: token });
    notice = "Your email address is verified.";
  });
}

function frame(title: string, body: TemplateResult): TemplateResult {
  return html`<main class="auth" id="main">
    <h1 class="brand">Parley</h1>
    <section class="card" aria-labelledby="auth-title">
      <h2 id="auth-title">${title}</h2>
      ${errorLine(error)} ${notice ? html`<p class="notice" role="status">${notice}</p>` : ""} ${body}
    </section>
  </main>`;
}

export function signUpView(): TemplateResult {
  return frame(
    "Create your account",
    html`<form @submit=${signUp}>
        <label>Email <input name="email" type="email" autocomplete="email" required /></label>
        <label>Display name <input name="displayName" autocomplete="name" required maxlength="100" /></label>
        <label
          >Password
          <input name="password" type="password" autocomplete="new-password" required minlength="12" maxlength="256"
        /></label>
        <button type="submit" ?disabled=${busy}>Create account</button>
      </form>
      <p>Have an account? <a href="/signin">Sign in</a></p>`,
  );
}

export function signInView(): TemplateResult {
  return frame(
    "Sign in",
    html`<form @submit=${signIn}>
        <label>Email <input name="email" type="email" autocomplete="username" required /></label>
        <label>Password <input name="password" type="password" autocomplete="current-password" required /></label>
        <button type="submit" ?disabled=${busy}>Sign in</button>
      </form>
      <p><a href="/forgot-password">Forgot password?</a></p>
      <p>New here? <a href="/signup">Create an account</a></p>`,
  );
}

export function forgotView(): TemplateResult {
  return frame(
    "Reset your password",
    html`<form @submit=${requestReset}>
        <label>Email <input name="email" type="email" autocomplete="email" required /></label>
        <button type="submit" ?disabled=${busy}>Send reset link</button>
      </form>
      <p><a href="/signin">Back to sign in</a></p>`,
  );
}

export function resetView(location: Location): TemplateResult {
  const token = location.params.get("token") ?? "";
  return frame(
    "Choose a new password",
    html`<form @submit=${(event: Event) => reset(event, token)}>
      <label
        >New password
        <input name="password" type="password" autocomplete="new-password" required minlength="12" maxlength="256"
      /></label>
      <button type="submit" ?disabled=${busy}>Set password</button>
    </form>`,
  );
}

export function verifyView(location: Location): TemplateResult {
  void verify(location.params.get("token") ?? "");
  return frame("Verify your email", html`<p><a href="/">Continue to Parley</a></p>`);
}

/** Signs out here and ends the session on the server. */
export async function signOut(): Promise<void> {
  try {
    await session.logout({});
  } catch {
    // Signed out locally whatever the server says: the refresh token is forgotten.
  }
  store(null, null);
  navigate("/signin", { replace: true });
}
