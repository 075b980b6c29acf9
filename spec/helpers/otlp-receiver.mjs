// otlp-receiver.mjs -- an OTLP trace receiver for tests: OTLP/gRPC (grpc-js serving the
// TraceService from the upstream .proto files) and OTLP/HTTP protobuf (node:http).
// SPDX-License-Identifier: MIT
//
// Every request body is decoded independently of lunagate with the OpenTelemetry JS
// protobuf root (@opentelemetry/otlp-transformer 0.216.0, build/src/generated/root.js).
//
//   const rx = await startOtlpReceiver();           // { grpcPort, httpPort }
//   ... point lunagate at http://127.0.0.1:${rx.grpcPort} (grpc) or :${rx.httpPort} (http)
//   const spans = await rx.waitForSpans(10, 5000);  // flattened, see flatSpans()
//   rx.requests  // decoded exports: [{ transport, path, headers, contentType, request, spans }]
//   rx.attempts  // every call, failed ones included: [{ transport, headers, path, at }]
//   rx.failNext(2, { grpcCode: 14, httpStatus: 503, retryAfter: '0' }) // inject failures
//   await rx.close();
import { createRequire } from 'node:module';
import http from 'node:http';
import path from 'node:path';

const require = createRequire(import.meta.url);
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const root = require('@opentelemetry/otlp-transformer/build/src/generated/root.js');

const pb = root.opentelemetry.proto;
export const ExportTraceServiceRequest = pb.collector.trace.v1.ExportTraceServiceRequest;
export const ExportTraceServiceResponse = pb.collector.trace.v1.ExportTraceServiceResponse;

const PROTO_DIR = path.join(
  path.dirname(require.resolve('@opentelemetry/otlp-grpc-exporter-base/package.json')),
  'build', 'protos');
const GRPC_PATH = '/opentelemetry.proto.collector.trace.v1.TraceService/Export';

// Decodes a serialized ExportTraceServiceRequest into a plain object: 64-bit ints as
// decimal strings, bytes as base64, and a `value` field on each AnyValue naming the
// oneof member that was set (so tests can tell intValue from doubleValue).
export function decodeRequest(buf) {
  const msg = ExportTraceServiceRequest.decode(buf);
  return ExportTraceServiceRequest.toObject(msg, { longs: String, bytes: String, oneofs: true, defaults: false });
}

const hex = (b64) => (b64 ? Buffer.from(b64, 'base64').toString('hex') : '');

// Turns an AnyValue object into { type, value } with arrays and kvlists expanded.
export function anyValue(v) {
  if (!v || !v.value) return { type: 'empty', value: undefined };
  const type = v.value;
  switch (type) {
    case 'arrayValue':
      return { type, value: (v.arrayValue.values || []).map(anyValue) };
    case 'kvlistValue':
      return { type, value: attrMap(v.kvlistValue.values || []) };
    case 'intValue':
      return { type, value: BigInt(v.intValue) };
    default:
      return { type, value: v[type] };
  }
}

export function attrMap(kvs) {
  const out = {};
  for (const kv of kvs || []) out[kv.key] = anyValue(kv.value);
  return out;
}

// Flattens a decoded request into spans with hex ids, the resource and scope attached.
export function flatSpans(req) {
  const out = [];
  for (const rs of req.resourceSpans || []) {
    const resource = attrMap(rs.resource && rs.resource.attributes);
    for (const ss of rs.scopeSpans || []) {
      for (const s of ss.spans || []) {
        out.push({
          traceId: hex(s.traceId), spanId: hex(s.spanId), parentSpanId: hex(s.parentSpanId),
          traceState: s.traceState || '', name: s.name, kind: s.kind || 0, flags: s.flags || 0,
          start: BigInt(s.startTimeUnixNano || 0), end: BigInt(s.endTimeUnixNano || 0),
          status: s.status || null, attributes: attrMap(s.attributes), resource,
          scope: ss.scope || null,
        });
      }
    }
  }
  return out;
}

export async function startOtlpReceiver({ grpc: withGrpc = true, http: withHttp = true } = {}) {
  const requests = [];
  const waiters = [];
  let failures = 0;
  let failSpec = {};
  const rx = { requests, grpcPort: 0, httpPort: 0 };

  const record = (transport, reqPath, headers, buf) => {
    const entry = { transport, path: reqPath, headers, raw: buf, request: null, spans: [], error: null };
    try {
      entry.request = decodeRequest(buf);
      entry.spans = flatSpans(entry.request);
    } catch (e) {
      entry.error = e;
    }
    requests.push(entry);
    for (const w of waiters.splice(0)) w();
    return entry;
  };
  const takeFailure = () => {
    if (failures > 0) { failures--; return failSpec; }
    return null;
  };

  rx.failNext = (n, spec = {}) => { failures = n; failSpec = spec; };
  rx.spans = () => requests.flatMap((r) => r.spans);
  rx.attempts = [];
  rx.waitForSpans = async (n, timeoutMs = 5000) => {
    const deadline = Date.now() + timeoutMs;
    while (rx.spans().length < n) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      await new Promise((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 100));
        waiters.push(() => { clearTimeout(t); resolve(); });
      });
    }
    return rx.spans();
  };

  let grpcServer = null;
  if (withGrpc) {
    const def = protoLoader.loadSync('opentelemetry/proto/collector/trace/v1/trace_service.proto', {
      includeDirs: [PROTO_DIR], keepCase: false, longs: String, defaults: false,
    });
    const svc = def['opentelemetry.proto.collector.trace.v1.TraceService'];
    // Keep the raw bytes so the JS root, not proto-loader, decodes them.
    const service = { ...svc, Export: { ...svc.Export, requestDeserialize: (b) => b } };
    grpcServer = new grpc.Server();
    grpcServer.addService(service, {
      Export(call, callback) {
        const headers = call.metadata.getMap();
        rx.attempts.push({ transport: 'grpc', headers, at: Date.now() });
        const f = takeFailure();
        if (f) {
          callback({ code: f.grpcCode ?? grpc.status.UNAVAILABLE, details: f.details || 'injected failure' });
          return;
        }
        record('grpc', GRPC_PATH, headers, call.request);
        callback(null, {});
      },
    });
    rx.grpcPort = await new Promise((resolve, reject) => {
      grpcServer.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) =>
        (err ? reject(err) : resolve(port)));
    });
  }

  let httpServer = null;
  if (withHttp) {
    httpServer = http.createServer((req, res) => {
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        rx.attempts.push({ transport: 'http', headers: req.headers, path: req.url, at: Date.now() });
        if (req.method !== 'POST') { res.writeHead(405); res.end(); return; }
        const f = takeFailure();
        if (f) {
          const h = { 'content-type': 'application/x-protobuf' };
          if (f.retryAfter !== undefined) h['retry-after'] = String(f.retryAfter);
          res.writeHead(f.httpStatus || 503, h);
          res.end();
          return;
        }
        const entry = record('http', req.url, req.headers, Buffer.concat(chunks));
        entry.contentType = req.headers['content-type'];
        const body = ExportTraceServiceResponse.encode({}).finish();
        res.writeHead(200, { 'content-type': 'application/x-protobuf', 'content-length': body.length });
        res.end(Buffer.from(body));
      });
    });
    await new Promise((resolve) => httpServer.listen(0, '127.0.0.1', resolve));
    rx.httpPort = httpServer.address().port;
  }

  rx.close = async () => {
    if (grpcServer) await new Promise((resolve) => grpcServer.tryShutdown(() => resolve()));
    if (httpServer) {
      httpServer.closeAllConnections?.();
      await new Promise((resolve) => httpServer.close(() => resolve()));
    }
  };
  return rx;
}
