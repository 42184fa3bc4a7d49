// A stand-in for bootstrap-table (not packaged by Debian, and no CDN is reachable offline), enough for
// Great Expectations' Data Docs: `$(table).bootstrapTable({columns, data, sortName, sortOrder,
// rowAttributes})` renders the rows (their cells are the HTML Great Expectations wrote), sorted, each
// row a link to its validation page. Methods called by name (clearFilterControl, resetSearch) do nothing.
// Part of telemetry-lake (Apache-2.0 like the project); not bootstrap-table's code.
(function ($) {
  "use strict";
  function lookup(name) {
    return typeof name === "function" ? name : typeof name === "string" ? window[name] : undefined;
  }
  $.fn.bootstrapTable = function (options) {
    if (typeof options !== "object" || options === null) return this;
    return this.each(function () {
      const $table = $(this);
      const columns = options.columns || [];
      const rows = (options.data || []).slice();
      const sortColumn = columns.find((c) => c.field === options.sortName) || {};
      const sortKey = sortColumn.sortName || options.sortName;
      if (sortKey) {
        const direction = options.sortOrder === "desc" ? -1 : 1;
        rows.sort((a, b) => (a[sortKey] > b[sortKey] ? direction : a[sortKey] < b[sortKey] ? -direction : 0));
      }
      const attributes = lookup(options.rowAttributes);
      const head = $("<thead><tr></tr></thead>");
      columns.forEach((c) => head.find("tr").append($("<th></th>").text(c.title || c.field)));
      const body = $("<tbody></tbody>");
      rows.forEach((row, index) => {
        const tr = $("<tr></tr>");
        const attrs = attributes ? attributes(row, index) : {};
        Object.entries(attrs || {}).forEach(([k, v]) => tr.attr(k, v));
        columns.forEach((c) => tr.append($("<td></td>").html(row[c.field] === undefined ? "" : row[c.field])));
        if (tr.attr("data-href")) tr.css("cursor", "pointer");
        tr.on("click", () => $table.trigger("click-row.bs.table", [row, tr]));
        body.append(tr);
      });
      $table.empty().append(head, body).addClass("table");
      $table.attr("data-rows", String(rows.length));
    });
  };
})(jQuery);
