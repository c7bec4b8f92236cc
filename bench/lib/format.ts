/** Numbers for the report: fixed digits, "–" for one that is missing or not finite. */
export const f = (x: number | undefined, digits = 1) => (x === undefined || !Number.isFinite(x) ? "–" : x.toFixed(digits));
export const f0 = (x: number | undefined) => f(x, 0);
export const f2 = (x: number | undefined) => f(x, 2);
