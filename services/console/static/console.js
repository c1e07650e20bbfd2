// Console CNMAS: keyboard shortcuts, lease renewal while a card is open, live refresh of the
// supervisor view, and showing only the outcome details that apply. Everything works without
// this script (plain forms and buttons); it only saves keystrokes and reloads.
(function () {
  "use strict";

  function announce(text) {
    var status = document.getElementById("statut");
    if (status) {
      status.className = "message info";
      status.textContent = text;
    }
  }

  function typing(el) {
    if (!el) return false;
    var tag = el.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || el.isContentEditable;
  }

  // Outcome details: the interview block for "interview", the callback block for "callback".
  function syncOutcome() {
    var chosen = document.querySelector("input[name=outcome]:checked");
    var value = chosen ? chosen.value : "";
    document.querySelectorAll("fieldset[data-for]").forEach(function (block) {
      block.hidden = block.getAttribute("data-for") !== value;
    });
  }

  function shortcuts(event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    var key = event.key.toLowerCase();
    var radio = document.querySelector("input[name=outcome][data-key='" + key + "']");
    if (radio) {
      radio.checked = true;
      radio.focus();
      syncOutcome();
      event.preventDefault();
      return;
    }
    var target = document.querySelector("[data-shortcut='" + key + "']");
    if (!target) return;
    event.preventDefault();
    if (target.tagName === "SELECT") {
      target.focus();
    } else {
      target.click();
    }
  }

  function renewLease(holder) {
    var seconds = parseInt(holder.getAttribute("data-renew-seconds"), 10) || 60;
    var body = new URLSearchParams();
    body.set("csrf", holder.getAttribute("data-csrf"));
    body.set("lease_id", holder.getAttribute("data-lease"));
    var timer = window.setInterval(function () {
      fetch(holder.getAttribute("data-renew-url"), {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-Console-Fetch": "1" },
        body: body
      }).then(function (r) { return r.json(); }).then(function (answer) {
        if (answer.ok) {
          var end = document.getElementById("bail-fin");
          var until = /(\d\d:\d\d:\d\d)/.exec(answer.message);
          if (end && until) end.textContent = until[1];
        } else {
          window.clearInterval(timer);
          announce(answer.message);
        }
      }).catch(function () {
        announce("La réservation de l'appel n'a pas pu être prolongée : vérifiez la connexion.");
      });
    }, seconds * 1000);
  }

  function liveRefresh(section) {
    var seconds = parseInt(section.getAttribute("data-refresh-seconds"), 10) || 5;
    window.setInterval(function () {
      fetch(section.getAttribute("data-live-url"), {
        credentials: "same-origin",
        headers: { "X-Console-Fetch": "1" }
      }).then(function (r) {
        if (!r.ok) throw new Error(String(r.status));
        return r.text();
      }).then(function (html) {
        section.setAttribute("aria-busy", "true");
        section.innerHTML = html;
        section.removeAttribute("aria-busy");
      }).catch(function () {
        var stamp = section.querySelector(".horodatage");
        if (stamp) stamp.textContent = "(actualisation impossible pour le moment ; nouvel essai dans " + seconds + " s)";
      });
    }, seconds * 1000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.addEventListener("keydown", shortcuts);
    document.querySelectorAll("input[name=outcome]").forEach(function (r) {
      r.addEventListener("change", syncOutcome);
    });
    if (document.getElementById("form-issue")) syncOutcome();
    var summary = document.getElementById("resume-erreurs");
    if (summary) summary.focus();
    var lease = document.getElementById("bail");
    if (lease) renewLease(lease);
    var live = document.querySelector("[data-live-url]");
    if (live) liveRefresh(live);
  });
})();
