/**
 * `npm run lint` runs this after biome: what biome does not check in comments. A doc comment
 * directly followed by another documents nothing (the second one is what tools show), so it is
 * left over from an edit. Prints each one as file:line and exits 1 when there is any.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";

const files = execFileSync("git", ["ls-files", "--cached", "--others", "--exclude-standard", "*.ts"], { encoding: "utf8" })
  .split("\n")
  .filter((f) => f !== "" && !f.startsWith("gen/"));
const found: string[] = [];
for (const file of files) {
  const text = readFileSync(file, "utf8");
  for (const m of text.matchAll(/\*\/[ \t]*\n[ \t]*\/\*\*/g)) {
    found.push(`${file}:${text.slice(0, m.index).split("\n").length}: a doc comment followed by another; merge them or drop one`);
  }
}
for (const line of found) console.error(line);
process.exit(found.length > 0 ? 1 : 0);
