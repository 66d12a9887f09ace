// Confirmation for plain forms that are destructive (htmx forms use hx-confirm): the form's own
// data-confirm, or that of the button that submitted it (one form, several actions).
document.addEventListener("submit", function (event) {
  var form = event.target;
  var button = event.submitter;
  var question = (button && button.getAttribute("data-confirm")) || form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
}, true);
// «Выбрать все» checkboxes: a header checkbox with data-check-all="name" toggles the rows.
document.addEventListener("change", function (event) {
  var name = event.target.getAttribute && event.target.getAttribute("data-check-all");
  if (!name) return;
  document.querySelectorAll('input[type=checkbox][name="' + name + '"]').forEach(function (box) {
    box.checked = event.target.checked;
  });
});

/* --- ВИМИС registry: Да/Нет dialog, mass-operation confirmation, «+»/«−» journal rows --- */

// A <dialog> with «Да» / «Нет» (seed V-9): forms with data-confirm-yes-no ask before submitting.
var yesNoDialog = null;
function askYesNo(question, onYes) {
  if (!yesNoDialog) {
    yesNoDialog = document.createElement("dialog");
    yesNoDialog.className = "confirm-dialog";
    yesNoDialog.innerHTML = '<p class="question"></p><form method="dialog" class="buttons">' +
      '<button value="yes" class="primary">Да</button> <button value="no">Нет</button></form>';
    document.body.appendChild(yesNoDialog);
  }
  yesNoDialog.querySelector(".question").textContent = question;
  yesNoDialog.returnValue = "";
  yesNoDialog.onclose = function () {
    if (yesNoDialog.returnValue === "yes") onYes();
  };
  yesNoDialog.showModal();
  yesNoDialog.querySelector("button[value=no]").focus();
}

document.addEventListener("submit", function (event) {
  var form = event.target;
  var question = form.getAttribute("data-confirm-yes-no");
  if (question) {
    if (form.getAttribute("data-confirmed")) {
      form.removeAttribute("data-confirmed");
      return;
    }
    event.preventDefault();
    event.stopPropagation();  // htmx listens on the form: it must not see the unconfirmed submit
    var submitter = event.submitter;
    askYesNo(question, function () {
      form.setAttribute("data-confirmed", "1");
      if (submitter) form.requestSubmit(submitter); else form.requestSubmit();
    });
    return;
  }
  // «Отправить выделенные в ВИМИС»: an OK confirmation that names how many rows are ticked.
  var button = event.submitter;
  var template = button && button.getAttribute("data-confirm-count");
  if (!template) return;
  var name = button.getAttribute("data-count-of");
  var count = Array.prototype.filter.call(form.elements, function (el) {
    return el.name === name && el.checked;
  }).length;
  var stop = count === 0 ? (window.alert("Не выделено ни одного СЭМД."), true)
    : !window.confirm(template.replace("{n}", count));
  if (stop) {
    event.preventDefault();
    event.stopPropagation();
  }
}, true);

// «+» loads the journal row under its row (htmx) and becomes «−»; «−» removes the row.
function setExpanded(toggle, open) {
  toggle.textContent = open ? "−" : "+";
  toggle.setAttribute("aria-expanded", open ? "true" : "false");
}
document.addEventListener("htmx:beforeRequest", function (event) {
  var toggle = event.detail.elt;
  var rowId = toggle && toggle.getAttribute && toggle.getAttribute("data-expands");
  if (!rowId) return;
  var open = document.getElementById(rowId);
  if (open) {
    event.preventDefault();
    open.remove();
    setExpanded(toggle, false);
  }
});
document.addEventListener("htmx:afterRequest", function (event) {
  var toggle = event.detail.elt;
  if (toggle && toggle.getAttribute && toggle.getAttribute("data-expands") && event.detail.successful) {
    setExpanded(toggle, true);
  }
});
// A row that was re-rendered (pencil) starts collapsed: its old journal would be stale.
document.addEventListener("htmx:load", function (event) {
  var root = event.detail.elt;
  if (!root.querySelectorAll) return;
  root.querySelectorAll("[data-expands]").forEach(function (toggle) {
    if (toggle.getAttribute("aria-expanded") === "true") return;
    var stale = document.getElementById(toggle.getAttribute("data-expands"));
    if (stale) stale.remove();
  });
});
// «Печать» buttons.
document.addEventListener("click", function (event) {
  if (event.target.closest && event.target.closest("[data-print]")) window.print();
});

// An htmx request the server refused (4xx/5xx), or one that got no answer, swaps nothing; its
// Russian message (the error box of errors/_error.html) is shown at the top of the page instead.
function showHtmxError(text) {
  var area = document.getElementById("htmx-errors");
  if (!area) return;
  var note = document.createElement("div");
  note.className = "flash flash-error";
  note.setAttribute("role", "alert");
  note.textContent = text;
  area.replaceChildren(note);
}
document.addEventListener("htmx:responseError", function (event) {
  var xhr = event.detail.xhr;
  if (!xhr) return;
  var holder = document.createElement("div");
  holder.innerHTML = xhr.responseText || "";
  var box = holder.querySelector(".error-box");
  showHtmxError(box ? box.textContent.replace(/\s+/g, " ").trim() : "Запрос не выполнен (ошибка " + xhr.status + ").");
});
document.addEventListener("htmx:sendError", function () {
  showHtmxError("Портал не отвечает: проверьте соединение и повторите.");
});
