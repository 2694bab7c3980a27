// The web app is served by Envoy from web/dist (see edge_proxy/): one origin for the page and
// the gRPC-Web API, so no CORS and a strict Content Security Policy. Nothing is inlined: every
// script and style is a file under /assets/, which the policy's 'self' allows.
import { defineConfig } from "vite";

// `npm run dev` serves the app with hot reload and passes the API calls to a running edge
// (PARLEY_EDGE, default the local stack's Envoy) so the page keeps one origin.
const edge = process.env.PARLEY_EDGE ?? "http://127.0.0.1:20000";

export default defineConfig({
  server: {
    proxy: { "^/parley\\.": { target: edge } },
  },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    assetsInlineLimit: 0,
    sourcemap: true,
    target: "es2022",
  },
});
