// Compiled by types.test.mjs with `tsc --noEmit --strict`: the shipped
// declarations accept the documented calls and reject the wrong ones.
import { init, load, type Client, type BufferedClient, type FlushReport, type CuecastError } from "cuecast";

async function main(): Promise<void> {
  const cc: Client = await init({ endpoint: "https://relay.example.com/v1/batch", writeKey: "pk_live_x", flushAt: 10, retry: { maxDelay: 30_000 } });
  const id: string | undefined = cc.track("report.exported", { format: "csv", rows: 3, at: new Date(), tags: ["a"] });
  cc.shoutoutClicked({ shoutoutId: "spring-promo", action: "cta" });
  cc.surveySubmitted({ surveyId: "nps-q3", kind: "nps", score: 9, comment: "…", needsHelp: false });
  cc.surveySubmitted({ surveyId: "onboarding-feedback", answers: [{ questionId: "q1", answer: "Yes" }] });
  cc.onboardingTaskCompleted({ taskId: "connect-crm", checklistId: "getting-started", completed: 3, total: 5 });
  cc.walkthruGoalReached({ walkthruId: "create-invoice", goal: "invoice-sent" });
  cc.identify("user-42", { plan: "pro" });
  cc.reset();
  const report: FlushReport = await cc.flush();
  const total: number = report.sent + report.failed + report.pending + report.dropped;
  cc.optOut();
  cc.optIn();
  try {
    cc.track("");
  } catch (e) {
    const err = e as CuecastError;
    const field: string = err.field;
    void field;
  }
  void id;
  void total;

  const early: BufferedClient = load({ endpoint: "/v1/batch", writeKey: "pk" });
  early.track("app.started");
  const real: Client = await early.ready;
  void real;

  // @ts-expect-error: writeKey is required
  await init({ endpoint: "https://relay.example.com/v1/batch" });
  // @ts-expect-error: action is cta | dismiss | link
  cc.shoutoutClicked({ shoutoutId: "p", action: "close" });
  // @ts-expect-error: shoutoutId is required
  cc.shoutoutClicked({ action: "cta" });
  // @ts-expect-error: functions are not JSON
  cc.track("x", { fn: () => 1 });
  // @ts-expect-error: answers are {questionId, answer}
  cc.surveySubmitted({ surveyId: "s", answers: [{ answer: "Yes" }] });
}
void main;
