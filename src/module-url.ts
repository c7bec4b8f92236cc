/**
 * Where a worker's module is. Node runs the sources as `.ts` in this repository, but the
 * published package ships tsc's `.js` (Node does not strip types under node_modules). tsc's
 * rewriteRelativeImportExtensions rewrites import specifiers, not the URLs handed to `new
 * Worker`, so those take the extension of the module that starts the worker.
 */
export function siblingModule(name: string, importMetaUrl: string): URL {
  return new URL(`${name}${importMetaUrl.endsWith(".ts") ? ".ts" : ".js"}`, importMetaUrl);
}
