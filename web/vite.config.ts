// The web app is served by Envoy from web/dist (see edge_proxy/): one origin for the page and
// the gRPC-Web API, so no CORS and a strict Content Security Policy. Nothing is inlined: every
// script and style is a file under /assets/, which the policy's 'self' allows.
import { defineConfig } from "vite";

export default defineConfig({
  build: {
    outDir: "dist",
    emptyOutDir: true,
    assetsInlineLimit: 0,
    sourcemap: true,
    target: "es2022",
  },
});
