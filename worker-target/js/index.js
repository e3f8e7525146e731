// The Worker's entry module. Each request goes to the core first (`begin`,
// one call into WASM, no promise): the proxy's own answer comes back as a
// Response; a request to send on as a Forward. The common one (one Ollama
// box, no turn to take, no body to read through a model gate: `direct`) is
// driven from here — the subrequest, then the origin's answer handed back,
// each a plain call — so the only promise is the fetch itself; the rest go
// through `run`, the whole way in Rust. This module decides nothing: every
// answer, header and log line comes from the core, through src/lib.rs and
// src/forward.rs. It also
// exports the Durable Object class that keeps fair turns (the doorman; see
// src/turns.rs). `cargo xtask build-worker` bundles this with the
// wasm-bindgen output into build/worker.js; the .wasm stays a separate
// module (build/*.wasm).
import { DurableObject } from "cloudflare:workers";
import { begin, EdgeDoorman } from "../build/pkg/ollama_proxy_worker.js";

export default {
  fetch(request, env, ctx) {
    const step = begin(request, env);
    if (step instanceof Response) {
      return step;
    }
    if (!step.direct(request)) {
      return step.run(request, ctx);
    }
    return send(step, request, ctx);
  },
};

async function send(forward, request, ctx) {
  let upstream;
  try {
    upstream = await forward.send(request);
  } catch {
    return forward.failed();
  }
  return forward.answer(upstream, request, ctx);
}

// One object holds every key's rate bucket, every slot and the queue
// (bound as DOORMAN). Its methods are called over RPC by the Worker's
// isolates; each runs to completion without awaiting, so calls never
// interleave. A request that must wait gets its answer when the core's
// doorman grants it a slot (a release, a lease lapsing) or times it out
// (QUEUE_TIMEOUT): its call is held open until then, which also keeps the
// object from being evicted. What the core's doorman says changed is
// written to the object's storage after each call (not awaited: the
// runtime holds the call's answer until the write is done); a new instance
// — after an eviction or a deployment — reads it all back before its first
// call (nobody waits in a new instance: calls waiting on the old one
// failed with it).
export class Doorman extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    this.waiting = new Map();
    this.timer = null;
    ctx.blockConcurrencyWhile(async () => {
      const stored = await ctx.storage.list();
      this.doorman = new EdgeDoorman(env, stored, Date.now());
      this.save();
    });
  }

  admit(key, slot, cap, perMinute) {
    const answer = this.doorman.admit(key, slot, cap, perMinute, Date.now());
    this.settle();
    if (answer.ticket === undefined) {
      return answer;
    }
    const ticket = answer.ticket;
    delete answer.ticket;
    return new Promise((resolve) => {
      this.waiting.set(ticket, { answer, resolve });
      this.wake();
    });
  }

  renew(lease) {
    const renewed = this.doorman.renew(lease, Date.now());
    this.settle();
    return renewed;
  }

  release(lease) {
    this.doorman.release(lease, Date.now());
    this.settle();
  }

  // Waiting requests past their deadline are answered; slots of holders
  // gone quiet go to those still waiting.
  tick() {
    this.timer = null;
    for (const ticket of this.doorman.expire(Date.now())) {
      this.answer(ticket, (answer) => {
        answer.refuse = "queue_timeout";
      });
    }
    this.settle();
  }

  // Slots granted to waiting requests reach their calls; the changes go to
  // storage; the timer is set for the next deadline.
  settle() {
    const grants = this.doorman.grants();
    for (let i = 0; i < grants.length; i += 2) {
      this.answer(grants[i], (answer) => {
        answer.go = true;
        answer.lease = grants[i + 1];
        // Its isolate claims it at once (renews it): a call answered to
        // nobody (its client left while it waited) does not, and the slot
        // goes to the next in line within seconds.
        answer.claim = true;
      });
    }
    this.save();
    this.wake();
  }

  answer(ticket, fill) {
    const waiter = this.waiting.get(ticket);
    if (waiter !== undefined) {
      this.waiting.delete(ticket);
      fill(waiter.answer);
      waiter.resolve(waiter.answer);
    }
  }

  wake() {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    const at = this.doorman.nextWake();
    if (at !== undefined) {
      this.timer = setTimeout(() => this.tick(), Math.max(0, at - Date.now()));
    }
  }

  save() {
    try {
      for (const [op, records] of this.doorman.changes()) {
        if (op === "put") {
          this.ctx.storage.put(records);
        } else {
          this.ctx.storage.delete(records);
        }
      }
    } catch (error) {
      // Memory and storage would part ways: start again from storage (a
      // write that fails later, once queued, resets the object likewise).
      this.ctx.abort(error);
      throw error;
    }
  }
}
