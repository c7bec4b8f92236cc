/** A least-recently-used cache of at most `max` entries, for compiled formats keyed by their text. */
export function createLru<V>(max: number): (key: string, make: () => V) => V {
  // A Map iterates in insertion order; re-inserting on use keeps the least recent first.
  const entries = new Map<string, V>();
  return (key, make) => {
    let value = entries.get(key);
    if (value === undefined) {
      value = make();
      if (entries.size >= max) entries.delete(entries.keys().next().value!);
    } else entries.delete(key);
    entries.set(key, value);
    return value;
  };
}
