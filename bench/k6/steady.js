// Not a contest test: a steady rate for comparing two builds. 60 s, the VUs ramping to
// MAX_REQUESTS (450) in the first 10 s and holding there, so about MAX_REQUESTS payments a
// second; both processors quick and healthy throughout. The final's p99 moves with its rate
// and its stages, and one run's noise hides a change of a few tenths of a millisecond; a
// fixed rate with nothing else changing is the cleaner comparison, and the same rate against
// the floor says what our own path adds at that rate. Consistency and teardown as the final's.
import {
  baseOptions,
  buildScenarios,
  consistencyPerProcessor,
  defineStageFrom,
  paymentsWith,
  setupRun,
  teardownFromProcessors,
} from "./common.js";

const DURATION_S = 60;
const RAMP_S = 10;
const MAX_REQUESTS = Number(__ENV.MAX_REQUESTS || "450");
const AMOUNT = 20.05;
const TEARDOWN_WINDOW_MS = 120 * 1000;

// [at s, default delay ms, default failing, fallback delay ms, fallback failing]
const STAGES = [[1, 0, false, 0, false]];

export const options = {
  ...baseOptions,
  scenarios: buildScenarios(DURATION_S, MAX_REQUESTS, STAGES, RAMP_S),
};

export const setup = setupRun;
export const payments = paymentsWith(AMOUNT);
export const defineStage = defineStageFrom(STAGES);
export const checkPaymentsConsistency = consistencyPerProcessor(15 * 1000, 2000, 10);
export const teardown = teardownFromProcessors(TEARDOWN_WINDOW_MS);
