// The contest's final test: 300 s ramping to MAX_REQUESTS VUs (603; 1,206 in the stress
// mode), 20.05 per payment, ten stages of processor delay and failure, a consistency
// check every 10 s over [now - 15 s, now - 2 s], and a teardown that reads the gross,
// counts and fees from the processors' own admin summaries over the last 360 s.
import {
  baseOptions,
  buildScenarios,
  consistencyPerProcessor,
  defineStageFrom,
  paymentsWith,
  setupRun,
  teardownFromProcessors,
} from "./common.js";

const DURATION_S = 300;
const MAX_REQUESTS = Number(__ENV.MAX_REQUESTS || "603");
const AMOUNT = 20.05;
const TEARDOWN_WINDOW_MS = 360 * 1000;
const CONSISTENCY_FROM_AGO_MS = 15 * 1000;
const CONSISTENCY_TO_AGO_MS = 2000;
const CONSISTENCY_INTERVAL_S = 10;

// [at s, default delay ms, default failing, fallback delay ms, fallback failing]
const STAGES = [
  [1, 0, false, 0, false],
  [30, 1000, false, 0, false],
  [60, 500, false, 0, false],
  [90, 2000, true, 1000, false],
  [120, 5000, true, 5, false],
  [150, 0, false, 5, true],
  [180, 100, false, 5, false],
  [210, 50, false, 0, false],
  [240, 103, false, 10, false],
  [270, 2000, false, 0, false],
];

export const options = {
  ...baseOptions,
  scenarios: buildScenarios(DURATION_S, MAX_REQUESTS, STAGES),
};

export const setup = setupRun;
export const payments = paymentsWith(AMOUNT);
export const defineStage = defineStageFrom(STAGES);

export const checkPaymentsConsistency = consistencyPerProcessor(
  CONSISTENCY_FROM_AGO_MS, CONSISTENCY_TO_AGO_MS, CONSISTENCY_INTERVAL_S);
export const teardown = teardownFromProcessors(TEARDOWN_WINDOW_MS);
