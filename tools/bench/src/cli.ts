/** Exits 2 naming what to start when no fleet answers at `rest` (instead of a raw connection error). */
export async function exitUnlessFleetAnswers(rest: string, usage: string): Promise<void> {
  await fetch(`${rest}/healthz`).catch(() => {
    console.error(
      `no rest-gateway answers at ${rest}: start the fleet first (npm start), or name it\n\n${usage}`,
    );
    process.exit(2);
  });
}

/** `POST /v1/dev/token` refused (not a dev-mode fleet, or rate-limited): its status says which. */
export class DevTokenRefused extends Error {
  constructor(readonly status: number) {
    super(`POST /v1/dev/token: ${status} (give --jwt-secret outside dev mode)`);
  }
}

/** A token for `user` from a dev-mode fleet's rest-gateway. */
export async function devToken(restUrl: string, user: string): Promise<string> {
  const response = await fetch(`${restUrl}/v1/dev/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ user }),
  });
  if (!response.ok) throw new DevTokenRefused(response.status);
  return ((await response.json()) as { token: string }).token;
}
