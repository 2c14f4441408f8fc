// The contest's preview test: 60 s ramping to MAX_REQUESTS VUs (550), 19.90 per payment,
// six stages, a consistency check every 10 s over [now - 15 s, now - 1.5 s] compared as
// the absolute value of the summed differences, and a teardown that takes the gross and
// counts from OUR summary over the last 70 s (fees: the processors' rate times our amounts).
import { sleep } from "k6";
import {
  backendSummary,
  baseOptions,
  buildScenarios,
  defineStageFrom,
  metrics,
  paymentsWith,
  processorSummary,
  recordProcessor,
  setupRun,
  windowEndingBefore,
} from "./common.js";

const DURATION_S = 60;
const MAX_REQUESTS = Number(__ENV.MAX_REQUESTS || "550");
const AMOUNT = 19.9;
const TEARDOWN_WINDOW_MS = 70 * 1000;
const CONSISTENCY_FROM_AGO_MS = 15 * 1000;
const CONSISTENCY_TO_AGO_MS = 1500;
const CONSISTENCY_INTERVAL_S = 10;

// [at s, default delay ms, default failing, fallback delay ms, fallback failing]
const STAGES = [
  [1, 0, false, 0, false],
  [10, 100, false, 0, false],
  [20, 100, true, 0, false],
  [30, 2000, true, 1000, true],
  [40, 20, false, 20, false],
  [50, 0, false, 5000, false],
];

export const options = {
  ...baseOptions,
  scenarios: buildScenarios(DURATION_S, MAX_REQUESTS, STAGES),
};

export const setup = setupRun;
export const payments = paymentsWith(AMOUNT);
export const defineStage = defineStageFrom(STAGES);

export async function checkPaymentsConsistency() {
  const [from, to] = windowEndingBefore(CONSISTENCY_FROM_AGO_MS, CONSISTENCY_TO_AGO_MS);
  const [onDefault, onFallback, ours] = await Promise.all([
    processorSummary("default", from, to),
    processorSummary("fallback", from, to),
    backendSummary(from, to),
  ]);
  // The preview sums the signed differences first: opposite errors cancel out.
  const inconsistencies = Math.abs(
    ours.default.totalRequests - onDefault.totalRequests +
      (ours.fallback.totalRequests - onFallback.totalRequests),
  );
  metrics.paymentsInconsistency.add(inconsistencies);
  if (inconsistencies > 0) {
    console.warn(`${inconsistencies} inconsistencies in [${from}, ${to}]`);
  }
  sleep(CONSISTENCY_INTERVAL_S);
}

export async function teardown() {
  const [from, to] = windowEndingBefore(TEARDOWN_WINDOW_MS, 0);
  const onDefault = await processorSummary("default", from, to);
  const onFallback = await processorSummary("fallback", from, to);
  const ours = await backendSummary(from, to);
  metrics.totalTransactionsAmount.add(ours.default.totalAmount + ours.fallback.totalAmount);
  recordProcessor(
    "default", ours.default.totalRequests, ours.default.totalAmount, onDefault.feePerTransaction);
  recordProcessor(
    "fallback",
    ours.fallback.totalRequests,
    ours.fallback.totalAmount,
    onFallback.feePerTransaction,
  );
}
