// dashboard.mjs -- what the Grafana dashboard (config/grafana/lunagate-dashboard.json) queries.
// SPDX-License-Identifier: MIT
//
// dashboardMetricNames() gives the series names its PromQL uses exactly as written there
// (`agentgateway_requests_total`, `agentgateway_request_duration_seconds_bucket`, ...), so a
// live scrape can be checked against them: every name must appear as a sample name in the
// gateway's /metrics output (histogram samples carry `_bucket`, `_sum`, `_count`; counters
// `_total`).  metricFamily() strips the histogram suffixes to get the family name.

import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

export const DASHBOARD_PATH = fileURLToPath(
    new URL("../../config/grafana/lunagate-dashboard.json", import.meta.url));

// Prefix every metric of the gateway carries (config.metrics.prefix may change it; the
// dashboard is written for the default).
export const METRIC_PREFIX = "agentgateway_";

// loadDashboard([path]) -> the parsed dashboard JSON.
export function loadDashboard(path = DASHBOARD_PATH) {
    return JSON.parse(readFileSync(path, "utf8"));
}

// dashboardQueries([dashboard]) -> [{ where, expr }] for every PromQL string: panel targets
// (rows' nested panels included) and query variables.
export function dashboardQueries(dash = loadDashboard()) {
    const out = [];
    const walk = (panels) => {
        for (const p of panels ?? []) {
            for (const t of p.targets ?? []) {
                if (typeof t.expr === "string") out.push({ where: `panel "${p.title}" ${t.refId}`, expr: t.expr });
            }
            walk(p.panels);
        }
    };
    walk(dash.panels);
    for (const v of dash.templating?.list ?? []) {
        if (v.type !== "query") continue;
        const q = typeof v.query === "string" ? v.query : v.query?.query;
        if (q) out.push({ where: `variable ${v.name}`, expr: q });
    }
    return out;
}

// metricNamesIn(expr) -> series names with the gateway prefix used in one PromQL string.
export function metricNamesIn(expr, prefix = METRIC_PREFIX) {
    const re = new RegExp(`(?<![A-Za-z0-9_:])${prefix}[A-Za-z0-9_:]+`, "g");
    return [...new Set(expr.match(re) ?? [])];
}

// dashboardMetricNames([dashboard]) -> sorted, unique series names the dashboard queries.
export function dashboardMetricNames(dash = loadDashboard()) {
    const names = new Set();
    for (const { expr } of dashboardQueries(dash)) for (const n of metricNamesIn(expr)) names.add(n);
    return [...names].sort();
}

// metricFamily(name) -> the family a series belongs to (histogram suffixes removed).
export function metricFamily(name) {
    return name.replace(/_(bucket|sum|count)$/, "");
}
