/** Exits 2 naming what to start when no fleet answers at `rest` (instead of a raw connection error). */
export async function exitUnlessFleetAnswers(rest: string, usage: string): Promise<void> {
  await fetch(`${rest}/healthz`).catch(() => {
    console.error(
      `no rest-gateway answers at ${rest}: start the fleet first (npm start), or name it\n\n${usage}`,
    );
    process.exit(2);
  });
}
