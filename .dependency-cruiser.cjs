/**
 * The layering `npm test` holds the sources to (dependency-cruiser, `npm run lint:layers`).
 * The engine has two sides: a front end on the main thread (src/engine/*.ts) and a core on the
 * worker thread (src/engine/core/); they meet in the modules both sides need, named in SHARED.
 */
/** Engine modules both threads import: the messages between them, what callers see, and leaf helpers. */
const SHARED = "^src/engine/(protocol|types|clock|stop-strings|sampling-params|logits-processor)\\.ts$";

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: "no-cycles",
      comment: "A cycle, even of type imports only, puts a type in the wrong home.",
      severity: "error",
      from: {},
      to: { circular: true },
    },
    {
      name: "servers-see-the-engines-face",
      comment: "The servers use the engine through engine.ts and types.ts only.",
      severity: "error",
      from: { path: "^src/server/" },
      to: { path: "^src/engine/", pathNot: "^src/engine/(engine|types)\\.ts$" },
    },
    {
      name: "model-below-engine",
      comment: "src/model/ reads model folders and prepares inputs; it knows nothing of the engine.",
      severity: "error",
      from: { path: "^src/model/" },
      to: { path: "^src/engine/" },
    },
    {
      name: "front-end-not-into-core",
      comment: "The main thread starts the core's worker by URL and talks to it in protocol.ts messages.",
      severity: "error",
      from: { path: "^src/engine/", pathNot: "^src/engine/core/" },
      to: { path: "^src/engine/core/" },
    },
    {
      name: "core-not-into-front-end",
      comment: "The worker thread's modules import no main-thread module of the engine.",
      severity: "error",
      from: { path: "^src/engine/(core|structured)/" },
      to: { path: "^src/engine/[^/]+\\.ts$", pathNot: SHARED },
    },
    {
      name: "nothing-imports-upward",
      comment: "The servers, the engine and the model never import what composes them (the process, the CLI, the settings).",
      severity: "error",
      from: { path: "^src/(server|engine|model)/" },
      to: { path: "^src/(cli|glance-server|config)\\.ts$" },
    },
    {
      name: "privacy-and-audit-below-the-servers",
      comment: "Redaction and the audit log are used by the servers and the CLI; they import neither.",
      severity: "error",
      from: { path: "^src/(privacy|audit)/" },
      to: { path: "^src/(server|batch)/|^src/(cli|glance-server|config)\\.ts$" },
    },
    {
      name: "measure-below-its-users",
      comment:
        "src/measure/ (the streaming client, arrivals, statistics and SVG charts that the bench, glance loadtest and glance batch share) imports none of them, nor the servers.",
      severity: "error",
      from: { path: "^src/measure/" },
      to: { path: "^src/(batch|loadtest|server)/|^src/(cli|glance-server)\\.ts$" },
    },
    {
      name: "batch-not-into-loadtest",
      comment: "glance loadtest reads its inputs as glance batch does; glance batch needs nothing of glance loadtest.",
      severity: "error",
      from: { path: "^src/batch/" },
      to: { path: "^src/loadtest/" },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    exclude: { path: "^gen/" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    enhancedResolveOptions: { extensions: [".ts", ".js"] },
  },
};
