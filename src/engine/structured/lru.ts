/**
 * A least-recently-used cache for compiled formats keyed by their text, bounded by a count and,
 * where entries differ much in size, by their total weight (bytes).
 */
export interface Lru<V> {
  /** The entry, now the most recent; undefined when absent. */
  get(key: string): V | undefined;
  /** Adds the entry and drops the least recent ones past the bounds (the new one always stays). */
  set(key: string, value: V): void;
}

export function createLru<V>(max: number, weight?: { of(value: V): number; max: number }): Lru<V> {
  // A Map iterates in insertion order; re-inserting on use keeps the least recent first.
  const entries = new Map<string, V>();
  let total = 0;
  const weigh = (value: V) => weight?.of(value) ?? 0;
  return {
    get(key) {
      const value = entries.get(key);
      if (value === undefined) return undefined;
      entries.delete(key);
      entries.set(key, value);
      return value;
    },
    set(key, value) {
      const old = entries.get(key);
      if (old !== undefined) {
        entries.delete(key);
        total -= weigh(old);
      }
      entries.set(key, value);
      total += weigh(value);
      for (const [k, v] of entries) {
        if (k === key || (entries.size <= max && total <= (weight?.max ?? Infinity))) break;
        entries.delete(k);
        total -= weigh(v);
      }
    },
  };
}
