// deploy.test.mjs -- offline checks of the deployment files (issue 10): docker/Dockerfile,
// docker/docker-compose.yaml + docker/config.yaml, config/kubernetes/ (kustomize, types,
// and agreement between the manifests and the config.yaml they carry), and the Grafana
// dashboard in config/grafana/.  No Docker daemon or cluster is needed.
// SPDX-License-Identifier: MIT

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync, spawn, execFile } from "node:child_process";
import {
    existsSync, readFileSync, writeFileSync, mkdtempSync, rmSync, mkdirSync, symlinkSync,
    renameSync, readlinkSync, lstatSync,
} from "node:fs";
import http, { createServer } from "node:http";
import net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { tmpdir } from "node:os";
import { join, dirname, basename, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import { Namespace, ConfigMap, Service, Secret } from "kubernetes-models/v1";
import { Deployment } from "kubernetes-models/apps/v1";
import { HorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1";

import {
    loadDashboard, dashboardQueries, dashboardMetricNames, metricFamily,
} from "../helpers/dashboard.mjs";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const K8S = join(ROOT, "config/kubernetes");
const COMPOSE = join(ROOT, "docker/docker-compose.yaml");
const DOCKERFILE = join(ROOT, "docker/Dockerfile");
const execFileP = promisify(execFile);
const VERSION = readFileSync(join(ROOT, "VERSION"), "utf8").trim();

// The guide's Jaeger preset (`fields.add` of its tracing ConfigMap), word for word.
const GUIDE_JAEGER_FIELDS = {
    "gen_ai.operation.name": '"chat"',
    "gen_ai.system": "llm.provider",
    "gen_ai.request.model": "llm.request_model",
    "gen_ai.response.model": "llm.response_model",
    "gen_ai.usage.completion_tokens": "llm.output_tokens",
    "gen_ai.usage.prompt_tokens": "llm.input_tokens",
};

// ---- helpers ---------------------------------------------------------------------------

function run(cmd, args, opts = {}) {
    const r = spawnSync(cmd, args, { encoding: "utf8", timeout: 60_000, cwd: ROOT, ...opts });
    if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
    return r;
}

// kubectl parses YAML offline with `label --local` and prints JSON: one pretty-printed
// object after another, each starting with a "{" line and ending with a "}" line.  JSON
// strings cannot hold raw newlines, so the split below is exact.  (kubectl's YAML is YAML
// 1.1: unquoted y/n/on/off/yes/no become booleans, as they do for kubectl apply.)
function yamlObjects(text) {
    const r = run("kubectl", ["label", "--local", "-f", "-", "lunagate-spec-", "-o", "json"],
        { input: text });
    assert.equal(r.status, 0, `kubectl could not parse the YAML: ${r.stderr}`);
    return r.stdout.trim().split(/(?<=^\})\n(?=\{$)/m).map((s) => {
        const o = JSON.parse(s);
        if (o.metadata?.labels && Object.keys(o.metadata.labels).length === 0) delete o.metadata.labels;
        return o;
    });
}

// yamlToJson(text): any YAML mapping (a lunagate config, compose output) as a JS object,
// by wrapping it as the spec of a made-up Kubernetes object.
function yamlToJson(text) {
    const body = text.split("\n").map((l) => "  " + l).join("\n");
    const doc = `apiVersion: spec.lunagate.dev/v1\nkind: Wrapped\nmetadata:\n  name: wrapped\nspec:\n${body}\n`;
    return yamlObjects(doc)[0].spec;
}

function portOf(addr, dflt) {
    if (addr === undefined || addr === null) return dflt;
    const m = /:(\d+)$/.exec(String(addr));
    assert.ok(m, `address without a port: ${addr}`);
    return Number(m[1]);
}

// The ports a lunagate config makes the process listen on.
function configPorts(cfg) {
    const c = cfg.config ?? {};
    return {
        binds: (cfg.binds ?? []).map((b) => b.port),
        stats: portOf(c.statsAddr, 15020),
        readiness: portOf(c.readinessAddr, 15021),
        statsAddr: c.statsAddr ?? "0.0.0.0:15020",
        readinessAddr: c.readinessAddr ?? "0.0.0.0:15021",
    };
}

function assertGuideTracing(cfg, where) {
    const t = cfg.config?.tracing;
    assert.ok(t, `${where}: config.tracing missing`);
    assert.equal(t.otlpProtocol, "grpc", `${where}: otlpProtocol`);
    assert.equal(t.randomSampling, true, `${where}: randomSampling`);
    assert.deepEqual(t.fields?.add, GUIDE_JAEGER_FIELDS, `${where}: fields.add is the guide's Jaeger block`);
    const u = new URL(t.otlpEndpoint);
    assert.equal(u.protocol, "http:", `${where}: otlpEndpoint scheme`);
    assert.equal(u.port, "4317", `${where}: otlpEndpoint port`);
    return u;
}

function assertMockRoute(cfg, port, where) {
    const bind = (cfg.binds ?? []).find((b) => b.port === port);
    assert.ok(bind, `${where}: no bind on port ${port}`);
    const backends = bind.listeners.flatMap((l) => l.routes ?? []).flatMap((r) => r.backends ?? []);
    assert.ok(backends.some((b) => b.ai?.provider && "mock" in b.ai.provider),
        `${where}: port ${port} has no route to the mock provider`);
}

// Dockerfile instructions, continuation lines joined, comments dropped, per stage.
function dockerfile() {
    const text = readFileSync(DOCKERFILE, "utf8").replace(/\\\n/g, " ");
    const stages = [];
    for (const raw of text.split("\n")) {
        const line = raw.trim();
        if (!line || line.startsWith("#")) continue;
        const m = /^([A-Z]+)\s+(.*)$/.exec(line);
        assert.ok(m, `unparsable Dockerfile line: ${line}`);
        const [, op, rest] = m;
        if (op === "FROM") stages.push({ from: rest, ins: [] });
        else if (stages.length) stages.at(-1).ins.push({ op, rest });
    }
    return stages;
}

function aptPackages(runRest) {
    const m = /apt-get install\s+([^&;]*)/.exec(runRest);
    return m ? m[1].split(/\s+/).filter((w) => w && !w.startsWith("-")) : [];
}

let rendered; // kubectl kustomize output, parsed once
function k8s() {
    if (!rendered) {
        const r = run("kubectl", ["kustomize", K8S]);
        assert.equal(r.status, 0, `kubectl kustomize failed: ${r.stderr}`);
        rendered = yamlObjects(r.stdout);
    }
    return rendered;
}
const byKind = (kind) => k8s().filter((o) => o.kind === kind);
const one = (kind) => { const l = byKind(kind); assert.equal(l.length, 1, `one ${kind}`); return l[0]; };

function lunagateContainer() {
    const d = one("Deployment");
    const c = d.spec.template.spec.containers.find((x) => x.name === "lunagate");
    assert.ok(c, "container named lunagate");
    return c;
}

// A probe's or Service's port: a number or the name of a container port.
function resolvePort(c, p) {
    if (typeof p === "number") return p;
    if (/^\d+$/.test(p)) return Number(p);
    const cp = (c.ports ?? []).find((x) => x.name === p);
    assert.ok(cp, `no container port named ${p}`);
    return cp.containerPort;
}

function configMapConfig() {
    const cm = one("ConfigMap");
    assert.ok(typeof cm.data?.["config.yaml"] === "string", "ConfigMap has the key config.yaml");
    return yamlToJson(cm.data["config.yaml"]);
}

// ---- docker compose --------------------------------------------------------------------

test("docker-compose validates docker/docker-compose.yaml offline", () => {
    const r = run("docker-compose", ["-f", COMPOSE, "config", "-q"]);
    assert.equal(r.status, 0, `docker-compose config -q: ${r.stderr}`);
});

test("compose: lunagate beside Jaeger, ports on 127.0.0.1, config mounted at /config", () => {
    const r = run("docker-compose", ["-f", COMPOSE, "config"]);
    assert.equal(r.status, 0, r.stderr);
    const c = yamlToJson(r.stdout);
    const { lunagate, jaeger } = c.services;
    assert.ok(lunagate && jaeger, "services lunagate and jaeger");

    assert.match(jaeger.image, /^jaegertracing\/all-in-one(:|$)/);
    assert.equal(String(jaeger.environment.COLLECTOR_OTLP_ENABLED), "true");
    const published = (svc) => svc.ports.map((p) => {
        const m = /^(?:([\d.]+):)?(\d+):(\d+)(?:\/tcp)?$/.exec(p);
        assert.ok(m, `port spec ${p}`);
        return { ip: m[1], host: Number(m[2]), container: Number(m[3]) };
    });
    const jp = published(jaeger), lp = published(lunagate);
    for (const p of [...jp, ...lp]) assert.equal(p.ip, "127.0.0.1", `port ${p.host} bound to 127.0.0.1 only`);
    for (const port of [16686, 4317, 14268]) {
        assert.ok(jp.some((p) => p.container === port), `jaeger publishes ${port}`);
    }

    assert.equal(lunagate.image, `lunagate:${VERSION}`, "image tagged with VERSION");
    // Built from the repository root with docker/Dockerfile.
    assert.equal(resolve(lunagate.build.context), ROOT);
    assert.equal(lunagate.build.dockerfile, "docker/Dockerfile");

    // The config file mounted where the image reads it, and what it says.
    const mount = lunagate.volumes.map((v) => v.split(":")).find((v) => v[1] === "/config/config.yaml");
    assert.ok(mount, "a volume at /config/config.yaml");
    assert.equal(resolve(mount[0]), join(ROOT, "docker/config.yaml"));
    const cfg = yamlToJson(readFileSync(mount[0], "utf8"));
    const ports = configPorts(cfg);
    for (const port of [...ports.binds, ports.stats, ports.readiness]) {
        assert.ok(lp.some((p) => p.container === port), `compose publishes lunagate's port ${port}`);
    }
    for (const a of [ports.statsAddr, ports.readinessAddr]) {
        assert.doesNotMatch(a, /^(127\.|localhost|\[::1\])/, `${a} must be reachable from outside the container`);
    }
    const otlp = assertGuideTracing(cfg, "docker/config.yaml");
    assert.ok(otlp.hostname in c.services, `otlpEndpoint host ${otlp.hostname} is a compose service`);
    assert.ok(published(c.services[otlp.hostname]).some((p) => p.container === Number(otlp.port)),
        "the OTLP port is one Jaeger listens on");
    assertMockRoute(cfg, 3000, "docker/config.yaml");
});

// ---- Dockerfile ------------------------------------------------------------------------

test("Dockerfile: two Debian 12 stages, copied paths exist, runtime as required", () => {
    const stages = dockerfile();
    assert.equal(stages.length, 2, "builder and runtime stages");
    const text = readFileSync(DOCKERFILE, "utf8");
    const debian = /ARG DEBIAN=(\S+)/.exec(text)?.[1];
    for (const s of stages) {
        const img = s.from.split(/\s+/)[0].replace("${DEBIAN}", debian);
        assert.match(img, /^debian:12(\b|-)/, `stage FROM ${s.from} is Debian 12`);
    }
    const [build, rt] = stages;
    assert.ok(build.ins.some((i) => i.op === "RUN" && /\bmake\b/.test(i.rest)), "builder runs make");
    const workdir = build.ins.find((i) => i.op === "WORKDIR")?.rest;
    assert.ok(workdir, "builder WORKDIR");

    // Sources copied from the build context (the repository root) exist, and the context
    // filter (docker/Dockerfile.dockerignore: ignore all, then re-include) lets them through.
    const ignore = join(ROOT, "docker/Dockerfile.dockerignore");
    const kept = existsSync(ignore) ? readFileSync(ignore, "utf8").split("\n")
        .filter((l) => l.startsWith("!")).map((l) => l.slice(1).replace(/\/$/, "")) : null;
    for (const s of stages) {
        for (const i of s.ins.filter((x) => x.op === "COPY" && !x.rest.includes("--from"))) {
            const args = i.rest.split(/\s+/);
            for (const src of args.slice(0, -1)) {
                assert.ok(existsSync(join(ROOT, src)), `COPY source ${src} exists in the repo`);
                if (kept) assert.ok(kept.includes(src.replace(/\/$/, "")), `${src} is not excluded from the build context`);
            }
        }
    }
    // The runtime stage copies only the binary, lua/ and plugins/ out of the builder.
    const fromBuild = rt.ins.filter((i) => i.op === "COPY" && i.rest.includes("--from=build"))
        .map((i) => i.rest.split(/\s+/)[1]);
    const rel = fromBuild.map((p) => p.replace(workdir + "/", "").replace(/\/$/, ""));
    assert.deepEqual(rel.sort(), ["build/lunagate", "lua", "plugins"]);
    for (const r of rel.filter((x) => x !== "build/lunagate")) assert.ok(existsSync(join(ROOT, r)), `${r}/ exists`);
    assert.ok(/\$\(BUILD\)\/lunagate:/.test(readFileSync(join(ROOT, "Makefile"), "utf8")),
        "the Makefile builds build/lunagate");

    const pk = rt.ins.filter((i) => i.op === "RUN").flatMap((i) => aptPackages(i.rest));
    for (const p of ["libevent-2.1-7", "libevent-openssl-2.1-7", "libevent-pthreads-2.1-7", "libyaml-0-2",
        "libprotobuf-c1", "libcurl4", "libssl3", "libpcre2-8-0", "libhttp-parser2.9", "ca-certificates"]) {
        assert.ok(pk.includes(p), `runtime installs ${p}`);
    }
    assert.ok(!pk.some((p) => /-dev$|^build-essential$|^gcc/.test(p)), "no build tools in the runtime");

    const get = (op) => rt.ins.filter((i) => i.op === op).map((i) => i.rest);
    const user = get("USER").at(-1);
    assert.ok(user && !/^(root|0)(:|$)/.test(user), `non-root USER (${user})`);
    assert.match(user, /^\d+(:\d+)?$/, "numeric USER, so runAsNonRoot can verify it");
    const pod = one("Deployment").spec.template.spec.securityContext;
    assert.equal(pod.runAsUser, Number(user.split(":")[0]), "Deployment runs as the image's user");
    assert.deepEqual(get("EXPOSE").join(" ").split(/\s+/).map(Number).sort((a, b) => a - b), [3000, 15020, 15021]);
    assert.ok(get("ENV").some((e) => /^LUNAGATE_HOME=\/usr\/share\/lunagate$/.test(e)), "ENV LUNAGATE_HOME");
    const cmd = [...JSON.parse(get("ENTRYPOINT").at(-1)), ...JSON.parse(get("CMD").at(-1))];
    assert.deepEqual(cmd, ["lunagate", "-f", "/config/config.yaml"]);
    assert.ok(get("HEALTHCHECK").length === 1, "one HEALTHCHECK");
});

test("Dockerfile: every shared library build/lunagate needs is installed in the runtime", (t) => {
    const bin = join(ROOT, "build/lunagate");
    if (!existsSync(bin)) return t.skip("build/lunagate not built");
    const re = run("readelf", ["-d", bin]);
    if (re.status !== 0) return t.skip("readelf unavailable");
    const needed = [...re.stdout.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]);
    const rt = dockerfile()[1];
    const installed = new Set(rt.ins.filter((i) => i.op === "RUN").flatMap((i) => aptPackages(i.rest)));
    // In every debian:12 image already (Essential or required by apt/dpkg).
    const base = new Set(["libc6", "libgcc-s1", "libstdc++6", "zlib1g", "libzstd1", "liblzma5",
        "libbz2-1.0", "libcrypt1", "libselinux1"]);
    // One dpkg call for all of them (each call reads the whole file database).
    const r = run("dpkg", ["-S", ...needed.map((so) => `*/${so}`)]);
    const owners = new Map();
    for (const line of r.stdout.split("\n").filter(Boolean)) {
        const m = /^(.+?): (\/.*)$/.exec(line);
        if (!m) continue;
        const so = basename(m[2]);
        for (const p of m[1].split(",")) {
            if (!owners.has(so)) owners.set(so, new Set());
            owners.get(so).add(p.trim().split(":")[0]);
        }
    }
    for (const so of needed) {
        const pkgs = owners.get(so);
        assert.ok(pkgs, `no Debian package owns ${so}`);
        assert.ok([...pkgs].some((p) => installed.has(p) || base.has(p)),
            `${so} (from ${[...pkgs].join(", ")}) is not installed in the runtime stage`);
    }
});

test("Dockerfile HEALTHCHECK succeeds on 200 from /healthz/ready and fails otherwise", async () => {
    const hc = dockerfile()[1].ins.find((i) => i.op === "HEALTHCHECK").rest;
    const argv = JSON.parse(/CMD\s+(\[.*\])$/.exec(hc)[1]);
    const ready = configPorts(configMapConfig()).readiness;
    assert.ok(argv.join(" ").includes(`127.0.0.1/${ready}`), `healthcheck probes the readiness port ${ready}`);
    let status = 200, seenPath = "";
    const srv = createServer((req, res) => {
        seenPath = req.url;
        res.writeHead(status, { "content-type": "text/plain" });
        res.end(status === 200 ? "ready\n" : "not ready\n");
    });
    await new Promise((r) => srv.listen(0, "127.0.0.1", r));
    const port = srv.address().port;
    const probe = async () => {
        const a = argv.map((s) => s.replaceAll(`127.0.0.1/${ready}`, `127.0.0.1/${port}`));
        try { await execFileP(a[0], a.slice(1), { timeout: 10_000 }); return 0; } catch (e) { return e.code ?? 1; }
    };
    try {
        assert.equal(await probe(), 0, "healthy on 200");
        assert.equal(seenPath, "/healthz/ready");
        status = 503;
        assert.notEqual(await probe(), 0, "unhealthy on 503");
    } finally {
        await new Promise((r) => srv.close(r));
    }
    assert.notEqual(await probe(), 0, "unhealthy when nothing listens");
});

// ---- Kubernetes ------------------------------------------------------------------------

test("kubectl kustomize renders config/kubernetes and every object type-checks", () => {
    const models = { Namespace, ConfigMap, Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget };
    const apiVersions = {
        Namespace: "v1", ConfigMap: "v1", Service: "v1", Deployment: "apps/v1",
        HorizontalPodAutoscaler: "autoscaling/v2", PodDisruptionBudget: "policy/v1",
    };
    const objs = k8s();
    assert.deepEqual(objs.map((o) => o.kind).sort(), Object.keys(models).sort());
    for (const o of objs) {
        assert.equal(o.apiVersion, apiVersions[o.kind], `${o.kind} apiVersion`);
        assert.doesNotThrow(() => new models[o.kind](o).validate(), `${o.kind}/${o.metadata.name} validates`);
        if (o.kind !== "Namespace") assert.equal(o.metadata.namespace, one("Namespace").metadata.name);
    }
    // The validator is not a no-op: a broken copy of the Deployment is rejected.
    const bad = structuredClone(one("Deployment"));
    bad.spec.template.spec.containers[0].ports[0].containerPort = "http";
    assert.throws(() => new Deployment(bad).validate());
    assert.ok(!objs.some((o) => o.kind === "Secret"), "no Secret in the rendered output");
});

test("Deployment agrees with the config.yaml in the ConfigMap", () => {
    const cfg = configMapConfig();
    const ports = configPorts(cfg);
    const d = one("Deployment"), cm = one("ConfigMap"), c = lunagateContainer();
    const pod = d.spec.template.spec;
    assert.equal(c.image, `lunagate:${VERSION}`, "image tagged with VERSION (kustomization images)");
    const cports = c.ports.map((p) => p.containerPort);
    assert.deepEqual([...cports].sort((a, b) => a - b), [3000, 15020, 15021]);
    for (const p of [...ports.binds, ports.stats, ports.readiness]) {
        assert.ok(cports.includes(p), `containerPort ${p} (from config.yaml) declared`);
    }
    for (const a of [ports.statsAddr, ports.readinessAddr]) {
        assert.doesNotMatch(a, /^(127\.|localhost|\[::1\])/, `${a} must be reachable by the kubelet`);
    }

    // Probes hit the readiness listener.
    const rp = c.readinessProbe?.httpGet;
    assert.ok(rp, "readinessProbe.httpGet");
    assert.equal(rp.path, "/healthz/ready");
    assert.equal(resolvePort(c, rp.port), ports.readiness);
    const lp = c.livenessProbe?.tcpSocket ?? c.livenessProbe?.httpGet;
    assert.ok(lp, "livenessProbe");
    assert.equal(resolvePort(c, lp.port), ports.readiness);

    // Prometheus scrapes the stats listener.
    const ann = d.spec.template.metadata.annotations;
    assert.equal(ann["prometheus.io/scrape"], "true");
    assert.equal(Number(ann["prometheus.io/port"]), ports.stats);
    assert.equal(ann["prometheus.io/path"], "/metrics");

    // The config file is where the command line says, in a directory mount of the ConfigMap.
    const argv = [...(c.command ?? ["lunagate"]), ...(c.args ?? ["-f", "/config/config.yaml"])];
    const file = argv[argv.indexOf("-f") + 1];
    const mount = c.volumeMounts.find((m) => m.mountPath === dirname(file));
    assert.ok(mount, `a volume mounted at ${dirname(file)}`);
    assert.equal(mount.mountPath, "/config");
    assert.equal(mount.subPath, undefined, "no subPath: the kubelet's ..data swap must reach the pod");
    assert.equal(mount.subPathExpr, undefined);
    const vol = pod.volumes.find((v) => v.name === mount.name);
    assert.equal(vol.configMap?.name, cm.metadata.name, "the mount is the ConfigMap");
    const keyPath = (vol.configMap.items ?? []).find((i) => i.path === basename(file))?.key ?? basename(file);
    assert.equal(keyPath, "config.yaml");
    assert.ok(keyPath in cm.data, `ConfigMap key ${keyPath}`);

    // The tracing block is the guide's, and port 3000 answers with the mock provider.
    assertGuideTracing(cfg, "ConfigMap config.yaml");
    assertMockRoute(cfg, 3000, "ConfigMap config.yaml");
});

test("Deployment: security, resources, downward API, secrets, termination", () => {
    const d = one("Deployment"), c = lunagateContainer();
    const pod = d.spec.template.spec;
    assert.equal(pod.securityContext.runAsNonRoot, true);
    const sc = c.securityContext;
    assert.equal(sc.readOnlyRootFilesystem, true);
    assert.equal(sc.allowPrivilegeEscalation, false);
    assert.deepEqual(sc.capabilities.drop, ["ALL"]);
    assert.equal(sc.runAsNonRoot, true);
    for (const k of ["requests", "limits"]) {
        assert.ok(c.resources[k]?.cpu && c.resources[k]?.memory, `resources.${k}.cpu/memory`);
    }

    const env = Object.fromEntries(c.env.map((e) => [e.name, e]));
    const field = (n) => env[n]?.valueFrom?.fieldRef?.fieldPath;
    assert.equal(field("POD_NAME"), "metadata.name");
    assert.equal(field("POD_NAMESPACE"), "metadata.namespace");
    assert.equal(field("NODE_NAME"), "spec.nodeName");
    assert.equal(field("POD_IP"), "status.podIP");
    assert.equal(env.CPU_LIMIT?.valueFrom?.resourceFieldRef?.resource, "limits.cpu");
    assert.equal(env.CPU_LIMIT.valueFrom.resourceFieldRef.containerName ?? c.name, c.name);

    // API keys: from one Secret, optional, and the example Secret has exactly those keys.
    const refs = c.env.filter((e) => e.valueFrom?.secretKeyRef).map((e) => e.valueFrom.secretKeyRef);
    assert.ok(refs.length >= 1, "API keys from a Secret");
    for (const r of refs) assert.equal(r.optional, true, `secret key ${r.key} optional`);
    const [example] = yamlObjects(readFileSync(join(K8S, "secret.example.yaml"), "utf8"));
    assert.doesNotThrow(() => new Secret(example).validate());
    assert.equal(example.metadata.namespace, one("Namespace").metadata.name);
    for (const r of refs) {
        assert.equal(r.name, example.metadata.name);
        assert.ok(r.key in example.stringData, `secret.example.yaml has ${r.key}`);
    }
    const kust = yamlToJson(readFileSync(join(K8S, "kustomization.yaml"), "utf8"));
    assert.ok(!kust.resources.includes("secret.example.yaml"), "the example Secret is not applied");
    assert.ok(!kust.configMapGenerator, "plain ConfigMap: a generator's hash suffix would restart pods");

    // Termination: the grace period covers the preStop pause plus the drain deadline.
    const grace = pod.terminationGracePeriodSeconds;
    assert.ok(grace >= 10, "terminationGracePeriodSeconds set");
    if (env.TERMINATION_GRACE_PERIOD_SECONDS) assert.equal(Number(env.TERMINATION_GRACE_PERIOD_SECONDS.value), grace);
    const pre = c.lifecycle?.preStop?.exec?.command;
    const pause = pre?.[0] === "sleep" ? Number(pre[1]) : 0;
    assert.ok(pause + 5 < grace, `preStop ${pause}s + 5s drain fits in ${grace}s`);
});

test("Service, HPA and PDB point at the Deployment's pods and ports", () => {
    const d = one("Deployment"), c = lunagateContainer();
    const labels = d.spec.template.metadata.labels;
    const matches = (sel) => Object.entries(sel).every(([k, v]) => labels[k] === v);
    assert.ok(matches(d.spec.selector.matchLabels), "Deployment selector matches its template");
    const svc = one("Service");
    assert.ok(matches(svc.spec.selector), "Service selects the pods");
    const cfgPorts = configPorts(configMapConfig());
    const targets = svc.spec.ports.map((p) => resolvePort(c, p.targetPort ?? p.port));
    for (const p of [...cfgPorts.binds, cfgPorts.stats]) assert.ok(targets.includes(p), `Service reaches port ${p}`);

    const hpa = one("HorizontalPodAutoscaler");
    assert.deepEqual(hpa.spec.scaleTargetRef, { apiVersion: "apps/v1", kind: "Deployment", name: d.metadata.name });
    assert.ok(hpa.spec.metrics.some((m) => m.type === "Resource" && m.resource.name === "cpu"), "scales on CPU");
    assert.ok(c.resources.requests.cpu, "CPU utilisation needs a CPU request");
    assert.ok(hpa.spec.minReplicas >= 2, "at least two replicas, so the PDB can allow a disruption");

    const pdb = one("PodDisruptionBudget");
    assert.ok(matches(pdb.spec.selector.matchLabels), "PDB selects the pods");
    assert.ok(pdb.spec.minAvailable < hpa.spec.minReplicas, "PDB leaves room to drain a node");
});

// ---- the configs themselves, through the real binary -----------------------------------

test("docker/config.yaml and the ConfigMap's config.yaml pass lunagate --validate-only", (t) => {
    const bin = process.env.LUNAGATE_BIN ?? join(ROOT, "build/lunagate");
    if (!existsSync(bin)) return t.skip("no lunagate binary");
    const dir = mkdtempSync(join(tmpdir(), "lunagate-deploy-"));
    try {
        const minimal = join(dir, "minimal.yaml");
        writeFileSync(minimal, "binds:\n- port: 3000\n  listeners:\n  - routes:\n    - backends:\n      - host: 127.0.0.1:1\n");
        const bad = join(dir, "bad.yaml");
        writeFileSync(bad, "binds:\n- port: 3000\n  listeners:\n  - routes:\n    - backends:\n      - hots: 127.0.0.1:1\n");
        const probe = run(bin, ["--validate-only", "-f", minimal]);
        const probeBad = run(bin, ["--validate-only", "-f", bad]);
        if (probe.status !== 0 || probeBad.status === 0) {
            return t.skip("the binary does not validate configs yet (a minimal config fails or a typo passes)");
        }
        const cmFile = join(dir, "config.yaml");
        writeFileSync(cmFile, one("ConfigMap").data["config.yaml"]);
        for (const f of [join(ROOT, "docker/config.yaml"), cmFile]) {
            const r = run(bin, ["--validate-only", "-f", f]);
            assert.equal(r.status, 0, `${f}: ${r.stderr || r.stdout}`);
        }
    } finally {
        rmSync(dir, { recursive: true, force: true });
    }
});

// ---- ConfigMap updates: the kubelet's ..data swap -------------------------------------

async function freePort() {
    const srv = net.createServer();
    await new Promise((r) => srv.listen(0, "127.0.0.1", r));
    const { port } = srv.address();
    await new Promise((r) => srv.close(r));
    return port;
}

// Lays out a ConfigMap volume the way the kubelet's AtomicWriter does: the data in a
// timestamped directory, `..data` a symlink to it, `config.yaml` a symlink to
// `..data/config.yaml`; an update writes a new directory, points `..data_tmp` at it, renames
// that over `..data` (atomic) and removes the old directory.
function configMapVolume(dir) {
    let n = 0;
    return (text) => {
        const ts = `..2026_11_26_00_00_00.${String(++n).padStart(9, "0")}`;
        mkdirSync(join(dir, ts));
        writeFileSync(join(dir, ts, "config.yaml"), text);
        let old = null;
        try { old = readlinkSync(join(dir, "..data")); } catch { /* first write */ }
        symlinkSync(ts, join(dir, "..data_tmp"));
        renameSync(join(dir, "..data_tmp"), join(dir, "..data"));
        try { lstatSync(join(dir, "config.yaml")); } catch { symlinkSync("..data/config.yaml", join(dir, "config.yaml")); }
        if (old) rmSync(join(dir, old), { recursive: true, force: true });
    };
}

function httpGet(port, path, agent) {
    return new Promise((resolve) => {
        const req = http.get({ host: "127.0.0.1", port, path, agent }, (res) => {
            let body = "";
            res.setEncoding("utf8");
            res.on("data", (d) => { body += d; });
            res.on("end", () => resolve({ status: res.statusCode, body }));
            res.on("error", (e) => resolve({ error: e.message }));
        });
        req.setTimeout(5000, () => req.destroy(new Error("timeout")));
        req.on("error", (e) => resolve({ error: e.message }));
    });
}

test("ConfigMap update: a ..data swap under load reloads lunagate with no failed request", async (t) => {
    const bin = process.env.LUNAGATE_BIN ?? join(ROOT, "build/lunagate");
    if (!existsSync(bin)) return t.skip("no lunagate binary");
    const [port, ready, stats] = [await freePort(), await freePort(), await freePort()];
    const dir = mkdtempSync(join(tmpdir(), "lunagate-configmap-"));
    const publish = configMapVolume(dir);
    const conf = (body) => [
        "config:",
        `  readinessAddr: 127.0.0.1:${ready}`,
        `  statsAddr: 127.0.0.1:${stats}`,
        '  adminAddr: "off"',
        "  workerThreads: 2",
        "binds:",
        `- port: ${port}`,
        "  listeners:",
        "  - routes:",
        "    - policies:",
        `        directResponse: {status: 200, body: "${body}"}`,
        "",
    ].join("\n");
    publish(conf("v1"));
    let log = "";
    const child = spawn(bin, ["-f", join(dir, "config.yaml")], { stdio: ["ignore", "pipe", "pipe"] });
    child.stdout.on("data", (d) => { log += d; });
    child.stderr.on("data", (d) => { log += d; });
    const exited = new Promise((r) => child.on("exit", r));
    const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
    let stop = false;
    const results = [];
    try {
        let up = false;
        for (let i = 0; i < 100 && !up; i++) {
            up = (await httpGet(ready, "/healthz/ready")).status === 200;
            if (!up) await sleep(100);
        }
        assert.ok(up, `lunagate not ready:\n${log}`);
        assert.equal((await httpGet(port, "/", agent)).body, "v1");

        const client = async () => {
            while (!stop) results.push(await httpGet(port, "/", agent));
        };
        const clients = [client(), client(), client(), client()];
        const waitFor = async (pred, ms) => {
            for (let i = 0; i < ms / 50; i++) { if (pred()) return true; await sleep(50); }
            return false;
        };
        await sleep(300);
        publish(conf("v2"));
        assert.ok(await waitFor(() => results.some((r) => r.body === "v2"), 10_000),
            `the swap was not picked up within 10 s:\n${log}`);
        const mark = results.length;
        await sleep(300);
        // A broken update: the running config keeps serving.
        publish("binds: [\n");
        await sleep(2500);
        stop = true;
        await Promise.all(clients);

        const failed = results.filter((r) => r.error || r.status !== 200);
        assert.deepEqual(failed.slice(0, 5), [], `${failed.length} of ${results.length} requests failed`);
        assert.ok(results.length > 100, `load was applied (${results.length} requests)`);
        const tail = results.slice(mark + 20);
        assert.ok(tail.length > 0 && tail.every((r) => r.body === "v2"),
            "after the swap (and the rejected bad update) every response comes from the new config");
        assert.equal(child.exitCode, null, "lunagate still running after a bad update");
    } finally {
        stop = true;
        agent.destroy();
        child.kill("SIGTERM");
        const killer = setTimeout(() => child.kill("SIGKILL"), 5000);
        await exited;
        clearTimeout(killer);
        rmSync(dir, { recursive: true, force: true });
    }
});

// ---- Grafana dashboard -----------------------------------------------------------------

// Series the gateway exposes (reference/agentgateway.md §4, plus lunagate's dropped-telemetry
// counters), with the labels the dashboard may group or filter by.
const HTTP = ["backend", "protocol", "method", "status", "reason", "bind", "gateway", "listener", "route", "route_rule"];
const GENAI = ["gen_ai_operation_name", "gen_ai_system", "gen_ai_request_model", "gen_ai_response_model",
    "bind", "gateway", "listener", "route", "route_rule"];
const MCP = ["method", "resource_type", "server", "resource", "bind", "gateway", "listener", "route", "route_rule"];
const hist = (name, labels) => [[`${name}_bucket`, [...labels, "le"]], [`${name}_sum`, labels], [`${name}_count`, labels]];
const KNOWN = new Map([
    ["agentgateway_requests_total", HTTP],
    ...hist("agentgateway_request_duration_seconds", HTTP),
    ...hist("agentgateway_gen_ai_client_token_usage", [...GENAI, "gen_ai_token_type"]),
    ...hist("agentgateway_gen_ai_server_request_duration", GENAI),
    ...hist("agentgateway_gen_ai_server_time_to_first_token", GENAI),
    ...hist("agentgateway_gen_ai_server_time_per_output_token", GENAI),
    ["agentgateway_mcp_requests_total", MCP],
    ["agentgateway_log_lines_dropped_total", []],
    ["agentgateway_spans_dropped_total", []],
]);

test("Grafana dashboard: datasource variable, every query on known metrics and labels", () => {
    const dash = loadDashboard();
    const dsVar = dash.templating.list.find((v) => v.type === "datasource");
    assert.ok(dsVar && dsVar.query === "prometheus", "a Prometheus datasource variable");
    const panels = [];
    const walk = (ps) => { for (const p of ps ?? []) { panels.push(p); walk(p.panels); } };
    walk(dash.panels);
    const uid = `\${${dsVar.name}}`;
    for (const p of panels.filter((x) => x.targets)) {
        assert.equal(p.datasource?.uid, uid, `panel "${p.title}" uses the datasource variable`);
        for (const t of p.targets) assert.equal(t.datasource?.uid, uid, `panel "${p.title}" target uses it`);
    }

    const queries = dashboardQueries(dash);
    assert.ok(queries.length >= 10);
    for (const { where, expr } of queries) {
        assert.ok(/agentgateway_/.test(expr), `${where} queries a gateway metric`);
        let depth = 0;
        for (const ch of expr) { depth += ch === "(" ? 1 : ch === ")" ? -1 : 0; assert.ok(depth >= 0, `${where}: parens`); }
        assert.equal(depth, 0, `${where}: balanced parentheses`);
        // Labels grouped by or matched on must exist on every metric the query reads.
        const used = new Set();
        for (const m of expr.matchAll(/\b(?:by|without)\s*\(([^)]*)\)/g)) m[1].split(",").map((s) => s.trim()).filter(Boolean).forEach((l) => used.add(l));
        for (const m of expr.matchAll(/\{([^}]*)\}/g)) for (const mm of m[1].matchAll(/([a-z_]+)\s*(=~|!~|!=|=)/g)) used.add(mm[1]);
        for (const m of expr.matchAll(/label_values\([^,]+,\s*([a-z_]+)\)/g)) used.add(m[1]);
        const names = [...expr.matchAll(/agentgateway_[a-z0-9_]+/g)].map((m) => m[0]);
        for (const n of names) {
            assert.ok(KNOWN.has(n), `${where}: ${n} is not a metric the gateway exposes`);
            for (const l of used) {
                if (l === "le" && !n.endsWith("_bucket")) continue;
                // Unlabelled counters are summed whole; the labels belong to the other operand.
                if (KNOWN.get(n).length === 0) continue;
                assert.ok(KNOWN.get(n).includes(l), `${where}: ${n} has no label ${l}`);
            }
        }
    }

    const names = dashboardMetricNames(dash);
    const families = new Set(names.map(metricFamily));
    for (const f of ["agentgateway_requests_total", "agentgateway_request_duration_seconds",
        "agentgateway_gen_ai_client_token_usage", "agentgateway_gen_ai_server_time_to_first_token",
        "agentgateway_gen_ai_server_time_per_output_token", "agentgateway_mcp_requests_total",
        "agentgateway_log_lines_dropped_total", "agentgateway_spans_dropped_total"]) {
        assert.ok(families.has(f), `dashboard shows ${f}`);
    }
    // p50 and p99 of request latency, TTFT and TPOT.
    const all = queries.map((q) => q.expr).join("\n");
    for (const f of ["agentgateway_request_duration_seconds", "agentgateway_gen_ai_server_time_to_first_token",
        "agentgateway_gen_ai_server_time_per_output_token"]) {
        for (const q of ["0.50", "0.99"]) {
            assert.ok(new RegExp(`histogram_quantile\\(${q}[^\\n]*${f}_bucket`).test(all), `${f} p${q.slice(2)}`);
        }
    }
    assert.match(all, /status=~"5\.\."/, "error rate counts status >= 500");
    assert.match(all, /by \(gen_ai_request_model, gen_ai_token_type\)[^\n]*agentgateway_gen_ai_client_token_usage/);
    assert.match(all, /by \(method\)[^\n]*agentgateway_mcp_requests_total/);
});

test("dashboardMetricNames() lists the series names as PromQL spells them", () => {
    const names = dashboardMetricNames();
    assert.deepEqual(names, [...new Set(names)].sort());
    assert.ok(names.includes("agentgateway_request_duration_seconds_bucket"));
    assert.ok(names.includes("agentgateway_gen_ai_client_token_usage_sum"));
    assert.ok(names.every((n) => /^agentgateway_[a-z0-9_]+$/.test(n)));
    assert.equal(metricFamily("agentgateway_gen_ai_client_token_usage_count"), "agentgateway_gen_ai_client_token_usage");
});
