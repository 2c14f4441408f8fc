// What the final and preview tests share: clients, setup, the payment VU, the stage VU.
//
// Written after the contest's own scripts (rinha-test/rinha-final.js, rinha.js and
// requests.js) so that a local run fires the same requests with the same timeouts and
// records the same metrics; only base URLs, the token and a time scale come from the
// environment. No remote imports: the run must work offline.
import http from "k6/http";
import { sleep } from "k6";
import exec from "k6/execution";
import { Counter } from "k6/metrics";

// Every client call in the contest had a 1.5 s timeout, admin calls included.
const REQUEST_TIMEOUT = "1500ms";
const SUCCESS_STATUSES = [200, 201, 202, 204];

export const BACKEND_URL = __ENV.BACKEND_URL || "http://localhost:9999";
const PROCESSOR_URLS = {
  default: __ENV.DEFAULT_PROCESSOR_URL || "http://localhost:8001",
  fallback: __ENV.FALLBACK_PROCESSOR_URL || "http://localhost:8002",
};
// The processors start with this token; setup replaces it with TOKEN, a fresh random
// value the runner passes, so only the harness can change delays and failures.
const INITIAL_TOKEN = __ENV.INITIAL_TOKEN || "123";
const TOKEN = __ENV.TOKEN || INITIAL_TOKEN;
// BENCH_DURATION_SCALE < 1 compresses the timeline (test length and stage times) for smoke
// runs; the consistency windows and the 1 s / 10 s sleeps keep their real lengths.
export const DURATION_SCALE = Number(__ENV.BENCH_DURATION_SCALE || "1");

export const metrics = {
  transactionsSuccess: new Counter("transactions_success"),
  transactionsFailure: new Counter("transactions_failure"),
  totalTransactionsAmount: new Counter("total_transactions_amount"),
  paymentsInconsistency: new Counter("payments_inconsistency"),
  default: {
    totalAmount: new Counter("default_total_amount"),
    totalRequests: new Counter("default_total_requests"),
    totalFee: new Counter("default_total_fee"),
    feePerTransaction: new Counter("default_fee_per_transaction"),
  },
  fallback: {
    totalAmount: new Counter("fallback_total_amount"),
    totalRequests: new Counter("fallback_total_requests"),
    totalFee: new Counter("fallback_total_fee"),
    feePerTransaction: new Counter("fallback_fee_per_transaction"),
  },
};

function params(headers) {
  return {
    headers: { "Content-Type": "application/json", ...headers },
    timeout: REQUEST_TIMEOUT,
  };
}

function adminParams(token) {
  return params({ "X-Rinha-Token": token });
}

function scaledMs(seconds) {
  return `${Math.max(1, Math.round(seconds * 1000 * DURATION_SCALE))}ms`;
}

/**
 * Build the scenarios: ramping payments, one consistency VU, one short VU per stage.
 *
 * @param {number} durationS test length in seconds (before scaling)
 * @param {number} maxRequests VU target reached at the end of the ramp
 * @param {Array<Array>} stages rows of [atS, defaultDelayMs, defaultFailing,
 *     fallbackDelayMs, fallbackFailing]; stage_NN runs row NN
 * @param {number} rampS how long the ramp to maxRequests takes; the VU count then holds for
 *     the rest of durationS (the contest's tests ramp for the whole test)
 */
export function buildScenarios(durationS, maxRequests, stages, rampS = durationS) {
  const ramp = [{ target: maxRequests, duration: scaledMs(rampS) }];
  if (rampS < durationS) {
    ramp.push({ target: maxRequests, duration: scaledMs(durationS - rampS) });
  }
  const scenarios = {
    payments: {
      exec: "payments",
      executor: "ramping-vus",
      startVUs: 1,
      gracefulRampDown: "0s",
      stages: ramp,
    },
    payments_consistency: {
      exec: "checkPaymentsConsistency",
      executor: "constant-vus",
      vus: 1,
      duration: scaledMs(durationS),
    },
  };
  stages.forEach((row, index) => {
    scenarios[`stage_${String(index).padStart(2, "0")}`] = {
      exec: "defineStage",
      executor: "constant-vus",
      vus: 1,
      duration: "1s",
      startTime: scaledMs(row[0]),
    };
  });
  return scenarios;
}

export const baseOptions = {
  // p(99) is what the score reads; the others make the printed summary useful.
  summaryTrendStats: ["avg", "med", "p(90)", "p(99)", "max", "count"],
  // Thresholds that always pass: they make k6 keep and export these submetrics.
  thresholds: {
    "http_req_duration{expected_response:true}": ["max>=0"],
    "http_req_duration{scenario:payments,expected_response:true}": ["max>=0"],
  },
};

async function setToken(service) {
  const response = await http.asyncRequest(
    "PUT",
    `${PROCESSOR_URLS[service]}/admin/configurations/token`,
    JSON.stringify({ token: TOKEN }),
    adminParams(INITIAL_TOKEN),
  );
  if (response.status !== 204) {
    exec.test.abort(`setting ${service}'s token failed (HTTP ${response.status})`);
  }
}

async function purgeProcessor(service) {
  const response = await http.asyncRequest(
    "POST",
    `${PROCESSOR_URLS[service]}/admin/purge-payments`,
    null,
    adminParams(TOKEN),
  );
  if (response.status !== 200) {
    exec.test.abort(`purging ${service} failed (HTTP ${response.status})`);
  }
}

// The contest aborts the test when a stage cannot be set. Here the emulators share two
// cores with k6 and the stack, so an admin call can time out at the peak; one that got no
// answer at all (status 0) is retried a few times before giving up as the contest does.
const CONFIGURE_TRIES = 3;

async function configure(service, config, value) {
  let response;
  for (let attempt = 1; attempt <= CONFIGURE_TRIES; attempt++) {
    response = await http.asyncRequest(
      "PUT",
      `${PROCESSOR_URLS[service]}/admin/configurations/${config}`,
      JSON.stringify({ [config]: value }),
      adminParams(TOKEN),
    );
    if (response.status !== 0) {
      break;
    }
    console.warn(`setting ${service}'s ${config}: no answer (try ${attempt})`);
  }
  if (response.status !== 200) {
    exec.test.abort(`setting ${service}'s ${config} failed (HTTP ${response.status})`);
  }
}

/** Read a processor's admin summary; zeros when it does not answer 200, as the contest. */
export async function processorSummary(service, from, to) {
  const response = await http.asyncRequest(
    "GET",
    `${PROCESSOR_URLS[service]}/admin/payments-summary?from=${from}&to=${to}`,
    null,
    adminParams(TOKEN),
  );
  if (response.status === 200) {
    return JSON.parse(response.body);
  }
  console.error(`${service} /admin/payments-summary answered HTTP ${response.status}`);
  return { totalAmount: 0, totalRequests: 0, feePerTransaction: 0, totalFee: 0 };
}

/** Read our backend's summary; zeros when it does not answer 200, as the contest. */
export async function backendSummary(from, to) {
  const response = await http.asyncRequest(
    "GET",
    `${BACKEND_URL}/payments-summary?from=${from}&to=${to}`,
    null,
    params({}),
  );
  if (response.status === 200) {
    return JSON.parse(response.body);
  }
  console.error(`backend /payments-summary answered HTTP ${response.status}`);
  return {
    default: { totalAmount: 0, totalRequests: 0 },
    fallback: { totalAmount: 0, totalRequests: 0 },
  };
}

/** Take the processors for the harness, empty them, then ask the backend to reset. */
export async function setupRun() {
  await setToken("default");
  await setToken("fallback");
  await purgeProcessor("default");
  await purgeProcessor("fallback");
  // A backend without /purge-payments is tolerated: the status is not checked.
  await http.asyncRequest("POST", `${BACKEND_URL}/purge-payments`, null, params({}));
}

/** One payment per iteration with a fresh id, then 1 s of sleep: about one request/s/VU. */
export function paymentsWith(amount) {
  const body = (id) => JSON.stringify({ correlationId: id, amount: amount });
  return async function () {
    const response = await http.asyncRequest(
      "POST",
      `${BACKEND_URL}/payments`,
      body(crypto.randomUUID()),
      params({}),
    );
    if (SUCCESS_STATUSES.includes(response.status)) {
      metrics.transactionsSuccess.add(1);
      metrics.transactionsFailure.add(0);
    } else {
      metrics.transactionsSuccess.add(0);
      metrics.transactionsFailure.add(1);
    }
    sleep(1);
  };
}

/** The stage VU: set both processors' delay and failure from its row of the table. */
export function defineStageFrom(stages) {
  return async function () {
    const index = parseInt(exec.scenario.name.slice("stage_".length), 10);
    const [, defaultDelay, defaultFailing, fallbackDelay, fallbackFailing] = stages[index];
    await configure("default", "delay", defaultDelay);
    await configure("fallback", "delay", fallbackDelay);
    await configure("default", "failure", defaultFailing);
    await configure("fallback", "failure", fallbackFailing);
    sleep(1);
  };
}

/** Record one processor's teardown totals under the contest's metric names. */
export function recordProcessor(service, requests, amount, feePerTransaction) {
  const m = metrics[service];
  m.totalRequests.add(requests);
  m.totalAmount.add(amount);
  m.feePerTransaction.add(feePerTransaction);
  m.totalFee.add(feePerTransaction * amount);
}

/** The consistency window [now - fromAgoMs, now - toAgoMs] as ISO strings. */
export function windowEndingBefore(fromAgoMs, toAgoMs) {
  const now = Date.now();
  return [new Date(now - fromAgoMs).toISOString(), new Date(now - toAgoMs).toISOString()];
}

/**
 * The final test's consistency VU: every intervalS, our summary against each processor's over
 * [now - fromAgoMs, now - toAgoMs], the absolute differences per processor added up.
 */
export function consistencyPerProcessor(fromAgoMs, toAgoMs, intervalS) {
  return async function () {
    const [from, to] = windowEndingBefore(fromAgoMs, toAgoMs);
    const [onDefault, onFallback, ours] = await Promise.all([
      processorSummary("default", from, to),
      processorSummary("fallback", from, to),
      backendSummary(from, to),
    ]);
    const inconsistencies =
      Math.abs(ours.default.totalRequests - onDefault.totalRequests) +
      Math.abs(ours.fallback.totalRequests - onFallback.totalRequests);
    metrics.paymentsInconsistency.add(inconsistencies);
    if (inconsistencies > 0) {
      console.warn(
        `inconsistent [${from}, ${to}]: default ours ${ours.default.totalRequests} vs ` +
          `${onDefault.totalRequests}, fallback ours ${ours.fallback.totalRequests} vs ` +
          `${onFallback.totalRequests}`,
      );
    }
    sleep(intervalS);
  };
}

/** The final test's teardown: gross, counts and fees from the processors' own summaries. */
export function teardownFromProcessors(windowMs) {
  return async function () {
    const [from, to] = windowEndingBefore(windowMs, 0);
    const onDefault = await processorSummary("default", from, to);
    const onFallback = await processorSummary("fallback", from, to);
    metrics.totalTransactionsAmount.add(onDefault.totalAmount + onFallback.totalAmount);
    recordProcessor(
      "default", onDefault.totalRequests, onDefault.totalAmount, onDefault.feePerTransaction);
    recordProcessor(
      "fallback", onFallback.totalRequests, onFallback.totalAmount, onFallback.feePerTransaction);
  };
}
