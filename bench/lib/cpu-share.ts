/** How much of the machine other processes used beside a measurement (Linux /proc/stat; elsewhere unknown). */
import { readFileSync } from "node:fs";

/** Busy CPU seconds of the whole machine, to tell how much other work ran beside a phase. */
export function machineBusyS(): number | undefined {
  try {
    const cpu = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
    const idle = cpu[3]! + (cpu[4] ?? 0);
    return (cpu.slice(0, 8).reduce((a, b) => a + b, 0) - idle) / 100;
  } catch {
    return undefined;
  }
}

/** Cores other processes used while `fn` ran in this process alone (the server idle or stopped). */
export async function alone<T>(fn: () => Promise<T>): Promise<{ value: T; otherCores?: number }> {
  const busy0 = machineBusyS();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const value = await fn();
  const cpu = process.cpuUsage(cpu0);
  const busy1 = machineBusyS();
  const wall = (performance.now() - t0) / 1000;
  if (busy0 === undefined || busy1 === undefined) return { value };
  return { value, otherCores: Math.max(0, (busy1 - busy0 - (cpu.user + cpu.system) / 1e6) / wall) };
}
