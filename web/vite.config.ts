import { defineConfig } from "vite";

// The page is served by `glance serve` at / on the HTTP port (src/server/playground.ts), and its
// calls go to the same origin. Relative asset URLs keep it working behind a proxy's sub-path.
export default defineConfig({
  root: import.meta.dirname,
  base: "./",
  build: { outDir: "dist", emptyOutDir: true, target: "es2022", reportCompressedSize: true },
});
