export { startServer, type NagareServer } from "./server/server.js";
export type { ServerOptions } from "./core/options.js";
