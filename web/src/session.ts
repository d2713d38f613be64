// Sign-in: OpenID Connect authorization code + PKCE (oidc-client-ts), then Nakama's custom
// authentication with the ID token exactly as mosaic/nakama_client.py sends it: custom id =
// the token's sub, vars.id_token = the token (nakama/modules/mosaic_auth.lua verifies it).
import { Client, Session } from "@heroiclabs/nakama-js";
import { User, UserManager, WebStorageStateStore } from "oidc-client-ts";
import type { ClientConfig } from "./config.ts";

export class SessionExpired extends Error {
  override name = "SessionExpired";
}

export class SessionManager {
  readonly client: Client;
  private readonly oidc: UserManager;
  private session: Session | null = null;
  private user: User | null = null;

  constructor(config: ClientConfig) {
    const n = config.nakama;
    this.client = new Client(n.serverKey, n.host, n.port, n.useSSL, 10_000, true);
    this.oidc = new UserManager({
      authority: config.oidc.issuer, client_id: config.oidc.clientId,
      redirect_uri: config.oidc.redirectUri, response_type: "code", scope: config.oidc.scope,
      automaticSilentRenew: false, loadUserInfo: false,
      // Per tab: two windows of one browser can be two users (README: watch a cycle).
      userStore: new WebStorageStateStore({ store: window.sessionStorage }),
    });
  }

  get sub(): string { return this.user?.profile.sub ?? ""; }
  get userId(): string { return this.session?.user_id ?? ""; }

  // Finishes a sign-in redirect if this page load is one; true when signed in afterwards.
  async start(): Promise<boolean> {
    const url = new URL(window.location.href);
    if (url.searchParams.has("code") || url.searchParams.has("error")) {
      try {
        await this.oidc.signinRedirectCallback();
      } finally {
        window.history.replaceState(null, "", url.pathname);
      }
    }
    this.user = await this.oidc.getUser();
    if (this.user === null) return false;
    await this.login();
    return true;
  }

  signIn(): Promise<void> { return this.oidc.signinRedirect(); }

  async signOut(): Promise<void> {
    await this.oidc.removeUser();
    this.user = null;
    this.session = null;
  }

  // A Nakama session that is valid for a while yet: refreshes it, or logs in again with a
  // fresh ID token (refresh_token grant); SessionExpired when neither works.
  async nakamaSession(): Promise<Session> {
    const soon = (Date.now() + 60_000) / 1000;
    if (this.session !== null && !this.session.isexpired(soon)) return this.session;
    if (this.session !== null && !this.session.isrefreshexpired(soon)) {
      try {
        this.session = await this.client.sessionRefresh(this.session);
        return this.session;
      } catch {
        // fall through to a new login
      }
    }
    return this.login();
  }

  private async idToken(): Promise<string> {
    let user = this.user ?? await this.oidc.getUser();
    if (user !== null && (user.expires_in ?? 0) < 60 && user.refresh_token) {
      try {
        user = await this.oidc.signinSilent(); // refresh_token grant at the token endpoint
      } catch {
        user = null;
      }
    }
    if (user === null || !user.id_token || (user.expires_in ?? 0) <= 0) {
      await this.oidc.removeUser();
      throw new SessionExpired("sign in again");
    }
    this.user = user;
    return user.id_token;
  }

  private async login(): Promise<Session> {
    const token = await this.idToken();
    try {
      this.session = await this.client.authenticateCustom(this.sub, true, undefined,
        { id_token: token });
      return this.session;
    } catch (error) {
      if (error instanceof Response && error.status === 401) {
        await this.oidc.removeUser(); // the issuer or Nakama no longer accepts this identity
        throw new SessionExpired("sign in again");
      }
      throw error;
    }
  }
}
