/** The seeded generator lives with the load generator in src/measure/, which the package ships; scripts and tests use it from there. */
export { seededRandom } from "../../src/measure/seeded-random.ts";
