// SPDX-License-Identifier: BSD-3-Clause
// The report page's template (cli/report/), embedded at build time by cmake/FerryEmbedText.cmake.
#pragma once

#include <string_view>

namespace ferry::cli::assets {

extern const std::string_view report_html;  ///< cli/report/report.html
extern const std::string_view report_css;   ///< cli/report/report.css
extern const std::string_view report_js;    ///< cli/report/report.js

}  // namespace ferry::cli::assets
