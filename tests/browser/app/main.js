// The page's own code, as a product team using cuecast would write it.
import { init } from "cuecast";

// The relay's address is fixed at build time (VITE_CUECAST_ENDPOINT); `?relay=` and `?key=`
// in the page's address point a preview build at another relay.
const params = new URLSearchParams(location.search);
const cc = await init({
  endpoint: params.get("relay") ?? import.meta.env.VITE_CUECAST_ENDPOINT ?? "http://127.0.0.1:8686/v1/batch",
  writeKey: params.get("key") ?? "pk_live_demo",
});

const currentUser = { id: "user-42", email: "ada@example.com", plan: "pro" };
cc.identify(currentUser.id, { email: currentUser.email, plan: currentUser.plan });
document.querySelector("#user").textContent = currentUser.email;

// ShoutOuts close on any of their buttons (cuecast has already captured the click).
for (const button of document.querySelectorAll("[data-cuecast-shoutout] .closes")) {
  button.addEventListener("click", () => { button.closest("aside").hidden = true; });
}

// NPS: eleven score buttons; the form is sent through the typed helper.
const scores = document.querySelector("#scores");
for (let score = 0; score <= 10; score++) {
  scores.insertAdjacentHTML("beforeend",
    `<label><input type="radio" name="score" value="${score}" id="score-${score}" required> ${score}</label>`);
}
const nps = document.querySelector("#nps");
nps.addEventListener("submit", (e) => {
  e.preventDefault();
  cc.surveySubmitted({
    surveyId: "nps-2026-q4",
    kind: "nps",
    score: Number(nps.elements.score.value),
    comment: nps.elements.comment.value,
    needsHelp: nps.elements.needsHelp.checked,
  });
  nps.hidden = true;
  document.querySelector("#nps-thanks").hidden = false;
});

document.querySelector("#feedback").addEventListener("submit", (e) => {
  e.preventDefault(); // captured by cuecast; nothing else to do in this demo
  e.target.hidden = true;
});

// Checklist: a task is done once; progress is shown next to the title.
const tasks = [...document.querySelectorAll("[data-cuecast-task]")];
const showProgress = () => {
  document.querySelector("#progress").textContent = `${tasks.filter((t) => t.disabled).length}/${tasks.length}`;
};
for (const task of tasks) {
  task.addEventListener("click", () => { task.disabled = true; showProgress(); });
}
showProgress();

// Walk-through: "Next" shows the following step; sending the invoice reaches the goal.
const steps = [...document.querySelectorAll("#walkthru .step")];
for (const next of document.querySelectorAll("#walkthru .next")) {
  next.addEventListener("click", () => {
    const at = steps.indexOf(next.closest(".step"));
    steps[at].hidden = true;
    steps[at + 1].hidden = false;
  });
}
document.querySelector("#send-invoice").addEventListener("click", () => {
  cc.walkthruGoalReached({ walkthruId: "create-invoice", goal: "invoice-sent", step: steps.length });
  steps.at(-1).hidden = true;
  document.querySelector("#walkthru-done").hidden = false;
});

document.body.dataset.ready = "true";
