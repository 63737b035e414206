/** Options of {@link init}. Durations are in milliseconds. */
export interface Options {
  /** Where batches are POSTed: any http(s) URL, or a path on this origin. */
  endpoint: string;
  /** The source's write key (`pk_…`), checked by the relay. */
  writeKey: string;
  /** Send when this many events are queued. Default 20 (1–1000). */
  flushAt?: number;
  /** Send this long after the first queued event. Default 5000. */
  flushInterval?: number;
  /** Largest request body in bytes. Default 49152 (48 KB). */
  maxBatchBytes?: number;
  /** Most events kept waiting; the oldest are dropped beyond it. Default 1000. */
  maxQueueEvents?: number;
  /** Most bytes of events kept waiting (in memory and in storage); the oldest are dropped beyond it. Default 2 MB. */
  maxQueueBytes?: number;
  /** A session ends after this long without events. Default 1800000 (30 min). */
  sessionTimeout?: number;
  /** Capture `data-cuecast-*` elements automatically. Default true. */
  autoCapture?: boolean;
  /** Log what is queued, sent, retried and dropped. Default false. */
  debug?: boolean;
  /** Retry policy for failed sends. */
  retry?: {
    /** First retry delay, doubled on each attempt. Default 500. */
    minDelay?: number;
    /** Longest delay between attempts. Default 60000. */
    maxDelay?: number;
    /** Random spread, 0–1. Default 0.2 (±20 %). */
    jitter?: number;
    /** A relay's Retry-After is honoured up to this long. Default 300000. */
    maxRetryAfter?: number;
    /** A batch is given up this long after its first send. Default 86400000 (24 h). */
    maxAge?: number;
  };
  /** Where to load `cuecast_bg.wasm` from, when a bundler cannot resolve it. */
  wasmUrl?: string | URL;
}

/** JSON-serialisable values: what event properties may hold. */
export type Json = string | number | boolean | null | Date | Json[] | { [key: string]: Json | undefined };
export type Properties = { [key: string]: Json | undefined };

export interface ShoutoutClicked extends Properties {
  shoutoutId: string;
  /** What was clicked. Default "cta". */
  action?: "cta" | "dismiss" | "link";
}

// A type alias, not an interface: only aliases fit the `Properties` index signature.
export type SurveyAnswer = {
  questionId: string;
  answer: string | number | boolean | null | Array<string | number>;
};

export interface SurveySubmitted extends Properties {
  surveyId: string;
  /** "nps" requires an integer `score` from 0 to 10. */
  kind?: "nps" | "csat" | "ces" | (string & {});
  score?: number;
  comment?: string;
  needsHelp?: boolean;
  /** Required when there is no score. */
  answers?: SurveyAnswer[];
}

export interface OnboardingTaskCompleted extends Properties {
  taskId: string;
  checklistId?: string;
  /** Tasks done so far, at most `total`. */
  completed?: number;
  total?: number;
}

export interface WalkthruGoalReached extends Properties {
  walkthruId: string;
  goal?: string;
}

/** What {@link Client.flush} resolves with: counts since the previous flush. */
export interface FlushReport {
  /** Events the relay acknowledged. */
  sent: number;
  /** Events the relay refused (4xx), or that were retried past the policy's limit. */
  failed: number;
  /** Events still waiting to be sent or retried. */
  pending: number;
  /** Events dropped before sending: queue full, or opt-out. */
  dropped: number;
  /** Why the last events were dropped, when any were (queue full, opt-out). */
  droppedWhy?: string;
}

/**
 * A started SDK. Every tracking method returns the new event's id (or
 * `undefined` after `optOut()`), and throws a {@link CuecastError} naming the
 * field on bad input, in which case nothing is queued.
 */
export interface Client {
  track(event: string, properties?: Properties): string | undefined;
  /** `shoutout.clicked` */
  shoutoutClicked(props: ShoutoutClicked): string | undefined;
  /** `survey.submitted` */
  surveySubmitted(props: SurveySubmitted): string | undefined;
  /** `onboarding.task_completed` */
  onboardingTaskCompleted(props: OnboardingTaskCompleted): string | undefined;
  /** `walkthru.goal_reached` */
  walkthruGoalReached(props: WalkthruGoalReached): string | undefined;
  /** Remembers the user; later events carry `userId`. Sends `user.identified`. */
  identify(userId: string | number, traits?: Properties): string | undefined;
  /** Forgets the user (logout): new anonymous id and session. */
  reset(): void;
  /** Sends everything queued now. */
  flush(): Promise<FlushReport>;
  /** Stops tracking and drops waiting events; remembered across page loads. */
  optOut(): void;
  optIn(): void;
}

/** The error thrown on bad input. */
export interface CuecastError extends Error {
  name: "CuecastError";
  /** "invalid_field" or "too_large". */
  code: string;
  /** The path of the offending field, e.g. "score" or "properties.items[2]". */
  field: string;
}

/**
 * Loads the WebAssembly module (once) and starts the SDK. Rejects with a
 * {@link CuecastError} when an option is missing or wrong. Where there is no
 * `window` (server-side rendering), resolves to a client that does nothing.
 */
export function init(options: Options): Promise<Client>;

/**
 * What {@link load} returns at once: the client's methods, queued in memory (and in localStorage, so a page closed while loading loses none)
 * until the module has loaded and then replayed in order. Tracking calls
 * return `undefined` before that.
 */
export interface BufferedClient extends Client {
  /** The real client once loaded; rejects with the `init()` error. */
  ready: Promise<Client>;
}

/**
 * Starts cuecast without waiting (see {@link BufferedClient}); for the first
 * events of an app's start-up, before an `await` is possible.
 */
export function load(options: Options): BufferedClient;
