// Starts npm `@modelcontextprotocol/server-everything` (its Streamable HTTP transport, `/mcp`, port
// from $PORT) bound to 127.0.0.1 only: the package listens on every interface, so Node's
// server.listen is given the loopback host before the package's own module runs.
import http from "node:http";

const listen = http.Server.prototype.listen;
http.Server.prototype.listen = function (port, ...rest) {
  if (typeof port === "number" || typeof port === "string") {
    return listen.call(this, Number(port), "127.0.0.1", ...rest.filter((a) => typeof a === "function"));
  }
  return listen.call(this, port, ...rest);
};
process.argv[2] = "streamableHttp";
await import("@modelcontextprotocol/server-everything/dist/index.js");
