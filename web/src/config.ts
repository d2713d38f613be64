// config.json, written by `mosaic web` next to the page.

export interface ClientConfig {
  nakama: { host: string; port: string; useSSL: boolean; serverKey: string };
  oidc: { issuer: string; clientId: string; redirectUri: string; scope: string };
  statusPollSeconds: number;
}

export async function loadConfig(): Promise<ClientConfig> {
  const resp = await fetch("config.json", { cache: "no-store" });
  if (!resp.ok) {
    throw new Error(`config.json answered ${resp.status}`);
  }
  return (await resp.json()) as ClientConfig;
}
