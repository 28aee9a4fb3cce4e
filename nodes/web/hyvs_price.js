// The price under each HunyuanVideo Suite API node, before it is queued: whenever a widget changes, the node's
// widget values go to the pack's /hyvs/price route, which prices the job they would build by the pack's price
// table (nodes/api_price.py). The line is drawn in the gap below the node, so the node's size, its widgets and
// the saved workflow stay as they are. Works in every frontend the pack supports (1.28 and later).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const API_CATEGORY = "HunyuanVideo Suite/API";

function refresh(node) {
  const widgets = {};
  for (const widget of node.widgets ?? []) widgets[widget.name] = widget.value;
  const key = JSON.stringify(widgets);
  if (key === node.hyvsPriceKey) return;
  node.hyvsPriceKey = key;
  api
    .fetchApi("/hyvs/price", { method: "POST", body: JSON.stringify({ node: node.type, widgets }) })
    .then((response) => response.json())
    .then((answer) => {
      if (node.hyvsPriceKey !== key) return; // a newer change is on its way
      node.hyvsPrice = answer.text ?? answer.error ?? "";
      node.setDirtyCanvas?.(true, false);
    })
    .catch(() => {
      node.hyvsPriceKey = undefined; // try again on the next draw
    });
}

app.registerExtension({
  name: "HunyuanVideoSuite.Price",
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.category !== API_CATEGORY) return;
    const drawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      drawForeground?.apply(this, arguments);
      refresh(this);
      if (!this.hyvsPrice || this.flags?.collapsed) return;
      ctx.save();
      ctx.font = "12px Arial";
      ctx.fillStyle = this.hyvsPrice.startsWith("price:") ? "#9c9" : "#db8";
      ctx.textAlign = "left";
      ctx.textBaseline = "alphabetic";
      ctx.fillText(this.hyvsPrice, 4, this.size[1] + 14);
      ctx.restore();
    };
  },
});
