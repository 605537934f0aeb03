import * as graphile from "./graphile.mjs";
import * as pgboss from "./pgboss.mjs";

export const SYSTEMS = { graphile, pgboss };

export function pick(name) {
  const system = SYSTEMS[name];
  if (!system) throw new Error(`unknown system ${name}; known: ${Object.keys(SYSTEMS).join(", ")}`);
  return system;
}
